//! An external mind: any serving engine that speaks the OpenAI-compatible chat completions API
//! (llama.cpp's server, vLLM, Ollama). Every cognitive turn is one streamed
//! `POST {endpoint}/chat/completions` with the persona's system prompt, the prompt, the prefill
//! as the assistant's unfinished answer (the engines named continue it), the stop sequences and
//! the sampling settings.
//!
//! Failures are `mind-failed` with what was wrong: an engine that is not there, answers
//! malformed JSON, an error object, an empty choice list, or a stream cut before its end. A 429
//! or 5xx is retried with backoff; the cycle's deadline bounds every wait. The API key (from
//! `BATOS_MIND_API_KEY`, or the file named by `BATOS_MIND_API_KEY_FILE`) is sent as a bearer
//! token and never appears in a log, a transcript or an error.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Ask, Completer, Completion, MindError};

/// How long one request may wait for the engine when the cycle gives no deadline.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How often a 429 or 5xx (or a refused connection) is tried again, and the first wait.
const RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// At most this much of an engine's error body goes into an error.
const ERROR_EXCERPT: usize = 300;

/// The engine and the model it serves.
#[derive(Clone)]
pub struct OpenAiMind {
    /// The API's base, ending in `/v1` (or wherever `chat/completions` lives).
    endpoint: String,
    model: String,
    key: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for OpenAiMind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiMind")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("key", &self.key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl OpenAiMind {
    /// A mind at `endpoint` (`http://HOST:PORT/v1`) serving `model`, with the API key from the
    /// environment if one is given there and `send_key` (an endpoint the image names gets no
    /// key: a client with the image's token could point it anywhere).
    pub fn new(endpoint: &str, model: &str, send_key: bool) -> Result<OpenAiMind, MindError> {
        let endpoint = endpoint.trim_end_matches('/');
        if !endpoint.starts_with("http://") {
            return Err(MindError::BadRequest(format!(
                "`{endpoint}` is not an http:// endpoint (an external mind is reached over plain HTTP, on loopback or a network you trust)"
            )));
        }
        if model.is_empty() {
            return Err(MindError::BadRequest(
                "an external mind needs the model's name (`--model NAME`)".into(),
            ));
        }
        if endpoint.contains(['?', '#']) {
            return Err(MindError::BadRequest(format!(
                "`{endpoint}` has a query or fragment: give the API's base, like http://127.0.0.1:8081/v1"
            )));
        }
        // No proxy from the environment: the prompts and the key go to the engine and nowhere
        // else.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Ok(OpenAiMind {
            endpoint: endpoint.to_owned(),
            model: model.to_owned(),
            key: if send_key { api_key()? } else { None },
            agent,
        })
    }

    fn body(&self, ask: &Ask<'_>) -> Value {
        let mut messages = vec![
            json!({"role": "system", "content": ask.system}),
            json!({"role": "user", "content": ask.prompt}),
        ];
        if !ask.prefill.is_empty() {
            messages.push(json!({"role": "assistant", "content": ask.prefill}));
        }
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": ask.max_tokens,
            "temperature": ask.temperature,
            "seed": ask.seed,
            "stream": true,
            // The embedded mind's repeat penalty, under the names llama.cpp's server and vLLM
            // read (engines that know neither ignore them): small models loop without one.
            "repeat_penalty": crate::COGNITION_REPEAT_PENALTY,
            "repetition_penalty": crate::COGNITION_REPEAT_PENALTY,
        });
        if !ask.stop.is_empty() {
            body["stop"] = json!(ask.stop);
        }
        body
    }

    /// One request, until a response with a status that is not worth retrying.
    fn send(
        &self,
        body: &str,
        deadline: Instant,
    ) -> Result<ureq::http::Response<ureq::Body>, MindError> {
        let url = format!("{}/chat/completions", self.endpoint);
        let mut backoff = FIRST_BACKOFF;
        let mut tried = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(failed("the cycle's time ran out waiting for the engine"));
            }
            let mut request = self
                .agent
                .post(&url)
                .config()
                .timeout_global(Some(left))
                .build()
                .header("Content-Type", "application/json")
                .header("Accept", "text/event-stream");
            if let Some(key) = &self.key {
                request = request.header("Authorization", format!("Bearer {key}"));
            }
            tried += 1;
            let why = match request.send(body) {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if status == 429 || (500..600).contains(&status) {
                        format!("the engine answered {status}")
                    } else if status != 200 {
                        return Err(failed(&format!(
                            "the engine answered {status}: {}",
                            excerpt(response)
                        )));
                    } else {
                        return Ok(response);
                    }
                }
                Err(ureq::Error::Timeout(_)) => {
                    return Err(failed("the engine did not answer in the cycle's time"));
                }
                Err(
                    e @ (ureq::Error::Io(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound),
                ) => format!("cannot reach the engine at {url}: {e}"),
                Err(e) => return Err(failed(&format!("the request to {url} failed: {e}"))),
            };
            if tried > RETRIES {
                return Err(failed(&format!("{why} ({tried} tries)")));
            }
            tracing::warn!("{why}; retrying in {} ms", backoff.as_millis());
            std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
            backoff *= 2;
        }
    }
}

impl Completer for OpenAiMind {
    fn complete(&self, ask: &Ask<'_>) -> Result<Completion, MindError> {
        let started = Instant::now();
        let deadline = ask.deadline.unwrap_or(started + DEFAULT_TIMEOUT);
        let body = self.body(ask).to_string();
        // At most this much text: a token is a few bytes, so an engine that sends far more than
        // it was asked for is refused rather than held in memory.
        let cap = ask
            .max_tokens
            .max(1)
            .saturating_mul(64)
            .saturating_add(4096);
        // The request runs on its own thread, so a host that shuts down stops waiting at once
        // (the thread ends at the deadline, holding nothing of the image).
        let mind = self.clone();
        let (done, result) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("batos-external-mind".into())
            .spawn(move || {
                let answer = mind.send(&body, deadline).and_then(|response| {
                    read_stream(response.into_body().into_reader(), deadline, cap)
                });
                let _ = done.send(answer);
            })
            .map_err(|e| failed(&format!("cannot start the request's thread: {e}")))?;
        let (text, tokens) = loop {
            match result.recv_timeout(Duration::from_millis(100)) {
                Ok(answer) => break answer?,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if ask
                        .shutdown
                        .is_some_and(|stop| stop.load(std::sync::atomic::Ordering::SeqCst))
                    {
                        return Err(failed("the host is shutting down"));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(failed("the request's thread ended without an answer"));
                }
            }
        };
        Ok(Completion {
            text: format!("{}{text}", ask.prefill),
            tokens,
            millis: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn label(&self) -> String {
        format!("{} at {} (openai)", self.model, self.endpoint)
    }
}

/// The longest line of a stream taken in: longer is refused.
const MAX_LINE: usize = 1 << 20;

/// The text of a streamed chat completion (server-sent events, `data: {...}` lines ending with
/// `data: [DONE]` or a `finish_reason`), at most `cap` bytes of it, and how many chunks carried
/// text.
pub fn read_stream(
    reader: impl std::io::Read,
    deadline: Instant,
    cap: usize,
) -> Result<(String, usize), MindError> {
    let mut reader = BufReader::new(reader);
    let mut text = String::new();
    let mut chunks = 0;
    let mut reasoned = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| failed(&format!("the stream broke off: {e}")))?;
        if read == 0 {
            break;
        }
        if line.len() > MAX_LINE {
            return Err(failed("the engine sent a line of over 1 MiB"));
        }
        if Instant::now() > deadline {
            return Err(failed(
                "the cycle's time ran out during the engine's answer",
            ));
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end();
        if let Some(error) = line.strip_prefix("error:") {
            return Err(failed(&format!(
                "the engine reported an error: {}",
                clip(error.trim())
            )));
        }
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            return finish(text, chunks, reasoned);
        }
        let event: Value = serde_json::from_str(data).map_err(|e| {
            failed(&format!(
                "the engine sent malformed JSON ({e}): {}",
                clip(data)
            ))
        })?;
        if let Some(error) = event.get("error").filter(|e| !e.is_null()) {
            return Err(failed(&format!(
                "the engine reported an error: {}",
                clip(&error.to_string())
            )));
        }
        let Some(choice) = event
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            // The usage chunk some engines send last has no choices; any other is wrong.
            if event.get("usage").is_some() {
                continue;
            }
            return Err(failed("the engine answered an empty choice list"));
        };
        if let Some(piece) = choice.pointer("/delta/content").and_then(Value::as_str)
            && !piece.is_empty()
        {
            text.push_str(piece);
            chunks += 1;
            if text.len() > cap {
                return Err(failed(&format!(
                    "the engine sent more than {cap} bytes for the tokens asked"
                )));
            }
        }
        reasoned |= choice
            .pointer("/delta/reasoning_content")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty());
        if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
            return finish(text, chunks, reasoned);
        }
    }
    Err(failed(
        "the engine's stream ended in the middle (no finish, no [DONE])",
    ))
}

/// A finished answer; one that only reasoned (a thinking model's whole budget) is no answer.
fn finish(text: String, chunks: usize, reasoned: bool) -> Result<(String, usize), MindError> {
    if text.is_empty() && reasoned {
        return Err(failed(
            "the engine's model only reasoned and answered nothing (turn its thinking off)",
        ));
    }
    Ok((text, chunks))
}

/// The API key: `BATOS_MIND_API_KEY`, or the first line of the file `BATOS_MIND_API_KEY_FILE`
/// names; none when neither is set.
fn api_key() -> Result<Option<String>, MindError> {
    if let Ok(key) = std::env::var("BATOS_MIND_API_KEY")
        && !key.trim().is_empty()
    {
        return Ok(Some(key.trim().to_owned()));
    }
    let Some(path) = std::env::var_os("BATOS_MIND_API_KEY_FILE") else {
        return Ok(None);
    };
    let path = std::path::PathBuf::from(path);
    let text = std::fs::read_to_string(&path).map_err(|source| MindError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(text
        .lines()
        .next()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty()))
}

fn failed(why: &str) -> MindError {
    MindError::Inference(format!("the external mind failed: {why}"))
}

fn clip(text: &str) -> String {
    let mut end = text.len().min(ERROR_EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn excerpt(response: ureq::http::Response<ureq::Body>) -> String {
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let _ = body.as_reader().take(64 << 10).read_to_end(&mut bytes);
    clip(String::from_utf8_lossy(&bytes).trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn a_stream_reads_to_its_text_and_every_broken_one_is_refused_with_what_was_wrong() {
        let good = "data: {\"choices\":[{\"delta\":{\"content\":\"let \"}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"x = 1;\"},\"finish_reason\":\"stop\"}]}\n\n\
                    data: [DONE]\n";
        assert_eq!(
            read_stream(good.as_bytes(), far(), 1 << 20).expect("read"),
            ("let x = 1;".to_owned(), 2)
        );
        for (stream, says) in [
            ("data: {not json\n", "malformed JSON"),
            ("data: {\"choices\":[]}\n", "empty choice list"),
            ("data: {\"error\":{\"message\":\"boom\"}}\n", "boom"),
            (
                "data: {\"choices\":[{\"delta\":{\"content\":\"half\"}}]}\n",
                "ended in the middle",
            ),
            (
                "error: {\"message\":\"context too long\"}\n",
                "context too long",
            ),
            (
                "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"},\"finish_reason\":\"length\"}]}\n",
                "only reasoned",
            ),
        ] {
            let e = read_stream(stream.as_bytes(), far(), 1 << 20).expect_err(stream);
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn an_engine_that_sends_too_much_is_refused_and_a_finish_ends_the_answer() {
        let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"0123456789\"}}]}\n";
        let e = read_stream(chunk.repeat(10).as_bytes(), far(), 50).expect_err("too much");
        assert!(e.to_string().contains("more than 50 bytes"), "{e}");
        let long = format!("data: {}\n", "x".repeat(MAX_LINE + 10));
        let e = read_stream(long.as_bytes(), far(), 1 << 30).expect_err("too long");
        assert!(e.to_string().contains("over 1 MiB"), "{e}");
        // A finish is the end, whatever follows it.
        let finished = "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\
                        data: {not even json\n";
        assert_eq!(
            read_stream(finished.as_bytes(), far(), 1 << 20).expect("read"),
            ("ok".to_owned(), 1)
        );
    }

    #[test]
    fn the_key_never_shows_in_what_is_printed() {
        let mind = OpenAiMind {
            endpoint: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            key: Some("sk-secret".into()),
            agent: ureq::Agent::new_with_defaults(),
        };
        assert!(!format!("{mind:?}").contains("sk-secret"));
        assert!(!mind.label().contains("sk-secret"));
    }
}
