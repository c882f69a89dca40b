// expect: guardian-rejected
// Opens a network connection: the component imports wasi:sockets, which the component gate refuses.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let stream = std::net::TcpStream::connect("127.0.0.1:22").map_err(|e| e.to_string())?;
    Ok(json!(format!("{stream:?}")))
}
