//! Gate 1: a method's Rust source, checked before it reaches the compiler.
//!
//! A method is one file that defines `pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String>`.
//! The gate parses it with `syn` and refuses, naming the rule and the line:
//!
//! - `unsafe` anywhere (blocks, functions, impls, traits, fn pointer types, inside macro calls);
//! - `extern` anywhere: `extern` blocks, `extern crate`, `extern "C"` functions;
//! - `mod x;` (a module from another file) and every attribute not on [`ALLOWED_ATTRIBUTES`]
//!   (so `#[link]`, `#[no_mangle]`, `#[export_name]`, `#[path]`, inner `#![...]` are refused);
//! - every macro not on [`ALLOWED_MACROS`]: no `include!`, `include_str!`, `include_bytes!`,
//!   `env!`, `option_env!`, `asm!`, `global_asm!`, `macro_rules!` (a macro defined here could hide
//!   any of these); macro calls nested inside allowed ones are checked too;
//! - `#[derive]` of anything but the standard derives in [`ALLOWED_DERIVES`].
//!
//! **The covenant, statically.** Exactly what is accepted: in each function, an *object variable*
//! is a parameter typed `Obj` or `&Obj`, or a `let` binding typed `Obj` or whose initialiser calls
//! `Obj::…` (`Obj::named`, `Obj::create`). A *write* is `x.set(slot, value)` or `x.remove(slot)` on
//! an object variable `x`. An *exit* is a `return` (outside closures) or the end of the function
//! body, except a `return Err(…)` or a tail `Err(…)`: an error rolls everything back, so it needs no
//! notification (nor does `?`). For every exit, every object variable written before it (in source
//! order) must have an `x.notify_changed()` call before that exit (in source order). The check reads
//! source order, not control flow: a notify inside an `if` counts for the code after it. What it
//! lets through, the run-time gate catches.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::spanned::Spanned;
use syn::visit::{self, Visit};

/// Attributes a method may carry.
pub const ALLOWED_ATTRIBUTES: &[&str] = &[
    "doc", "allow", "expect", "warn", "deny", "forbid", "derive", "inline", "must_use",
];

/// Derives a method may use: the standard library's.
pub const ALLOWED_DERIVES: &[&str] = &[
    "Debug",
    "Clone",
    "Copy",
    "PartialEq",
    "Eq",
    "PartialOrd",
    "Ord",
    "Hash",
    "Default",
];

/// Macros a method may call: formatting, assertions, JSON, and nothing that reaches the host
/// at compile time.
pub const ALLOWED_MACROS: &[&str] = &[
    "json",
    "vec",
    "format",
    "format_args",
    "write",
    "writeln",
    "print",
    "println",
    "eprint",
    "eprintln",
    "panic",
    "assert",
    "assert_eq",
    "assert_ne",
    "debug_assert",
    "debug_assert_eq",
    "debug_assert_ne",
    "unreachable",
    "unimplemented",
    "todo",
    "matches",
    "stringify",
    "concat",
    "line",
    "column",
];

/// Macros that reach the host at compile time (or hide code from this gate): never allowed, not
/// even imported under another name.
pub const FORBIDDEN_MACROS: &[&str] = &[
    "include",
    "include_str",
    "include_bytes",
    "env",
    "option_env",
    "asm",
    "global_asm",
    "naked_asm",
    "macro_rules",
    "concat_idents",
    "module_path",
    "file",
    "compile_error",
];

/// Rust's keywords that may stand in a macro's arguments: those of expressions. Every other
/// keyword (`use`, `mod`, `fn`, `static`, `struct`, `impl`, `unsafe`, `extern`, …) begins an item
/// or reaches outside, and is refused there.
pub const KEYWORDS_IN_MACROS: &[&str] = &[
    "as", "break", "continue", "crate", "else", "false", "for", "if", "in", "let", "loop", "match",
    "move", "mut", "ref", "return", "self", "Self", "super", "true", "while",
];

/// Rust's strict and reserved keywords (2024 edition).
fn is_keyword(word: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "Self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "type",
        "union",
        "unsafe",
        "use",
        "where",
        "while",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "macro",
        "macro_rules",
        "override",
        "priv",
        "try",
        "typeof",
        "unsized",
        "virtual",
        "yield",
    ];
    KEYWORDS.contains(&word)
}

/// One reason the gate refuses a source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// A stable name for the rule: `unsafe`, `extern`, `attribute`, `macro`, `module`, `derive`,
    /// `entry-point`, `covenant`, `syntax`, `unchecked` (valid Rust the gate cannot see into).
    pub rule: &'static str,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: [{}] {}", self.line, self.rule, self.message)
    }
}

/// Checks a method's source. `Ok` means the source gate has nothing against it.
pub fn check(source: &str) -> Result<(), Vec<Refusal>> {
    let file = match syn::parse_file(source) {
        Ok(file) => file,
        Err(e) => {
            return Err(vec![Refusal {
                rule: "syntax",
                line: e.span().start().line,
                message: format!("not valid Rust: {e}"),
            }]);
        }
    };
    let mut gate = Gate::default();
    gate.visit_file(&file);
    for attr in &file.attrs {
        gate.refuse(
            "attribute",
            attr.span(),
            "inner attributes (`#![...]`) are not allowed in a method",
        );
    }
    let has_run = file.items.iter().any(|item| {
        matches!(item, syn::Item::Fn(f) if f.sig.ident == "run" && matches!(f.vis, syn::Visibility::Public(_)))
    });
    if !has_run {
        gate.refuse(
            "entry-point",
            Span::call_site(),
            "a method defines `pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String>`",
        );
    }
    if gate.refusals.is_empty() {
        Ok(())
    } else {
        gate.refusals.sort_by_key(|r| r.line);
        Err(gate.refusals)
    }
}

#[derive(Default)]
struct Gate {
    refusals: Vec<Refusal>,
}

impl Gate {
    fn refuse(&mut self, rule: &'static str, span: Span, message: impl Into<String>) {
        self.refusals.push(Refusal {
            rule,
            line: span.start().line.max(1),
            message: message.into(),
        });
    }

    /// Checks tokens the parser does not see into: a macro call's arguments. Here only
    /// expressions may stand, so the check is an allowlist: of Rust's keywords only those of
    /// expressions ([`KEYWORDS_IN_MACROS`]); no `#` (an attribute) nor `$`; every macro called
    /// inside on [`ALLOWED_MACROS`]. An item (`use`, `mod`, `fn`, `static`, …), an attribute or an
    /// import inside a macro's arguments is refused, however deep it is nested.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tree) in trees.iter().enumerate() {
            match tree {
                TokenTree::Ident(ident) => {
                    let name = ident.to_string();
                    let bang =
                        matches!(trees.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == '!');
                    let group = matches!(trees.get(i + 2), Some(TokenTree::Group(_)));
                    if bang && group {
                        self.check_macro_name(&name, ident.span());
                    } else if is_keyword(&name) && !KEYWORDS_IN_MACROS.contains(&name.as_str()) {
                        let rule = match name.as_str() {
                            "unsafe" => "unsafe",
                            "extern" => "extern",
                            _ => "macro",
                        };
                        self.refuse(
                            rule,
                            ident.span(),
                            format!(
                                "`{name}` is not allowed inside a macro's arguments: only expressions stand there"
                            ),
                        );
                    }
                }
                TokenTree::Punct(p) if p.as_char() == '#' || p.as_char() == '$' => {
                    self.refuse(
                        "attribute",
                        p.span(),
                        format!(
                            "`{}` is not allowed inside a macro's arguments: only expressions stand there",
                            p.as_char()
                        ),
                    );
                }
                TokenTree::Group(group) => self.scan_tokens(group.stream()),
                TokenTree::Punct(_) | TokenTree::Literal(_) => {}
            }
        }
    }

    fn refuse_verbatim(&mut self, tokens: &TokenStream) {
        let span = tokens
            .clone()
            .into_iter()
            .next()
            .map(|t| t.span())
            .unwrap_or_else(Span::call_site);
        self.refuse(
            "unchecked",
            span,
            format!(
                "`{}` is Rust the gate cannot check (write it the plain way: one `use` per path, no leading `::` in a group, items with bodies)",
                tokens.to_string().chars().take(60).collect::<String>()
            ),
        );
    }

    fn refuse_unsafety(&mut self, token: &Option<syn::token::Unsafe>, what: &str) {
        if let Some(token) = token {
            self.refuse(
                "unsafe",
                token.span,
                format!("{what} is not allowed in a method"),
            );
        }
    }

    fn refuse_abi(&mut self, abi: &Option<syn::Abi>, what: &str) {
        if let Some(abi) = abi {
            self.refuse(
                "extern",
                abi.extern_token.span,
                format!("{what} are not allowed in a method"),
            );
        }
    }

    fn check_macro_name(&mut self, name: &str, span: Span) {
        if !ALLOWED_MACROS.contains(&name) {
            self.refuse(
                "macro",
                span,
                format!(
                    "the macro `{name}!` is not allowed in a method (allowed: {})",
                    ALLOWED_MACROS.join(", ")
                ),
            );
        }
    }

    fn check_function(&mut self, sig: &syn::Signature, body: &syn::Block) {
        let mut covenant = Covenant::default();
        for input in &sig.inputs {
            if let syn::FnArg::Typed(pat) = input
                && is_obj_type(&pat.ty)
                && let syn::Pat::Ident(ident) = &*pat.pat
            {
                covenant.objects.insert(ident.ident.to_string());
            }
        }
        covenant.visit_block(body);
        // The end of the body is an exit unless its tail is `Err(…)`.
        let tail_is_err =
            matches!(body.stmts.last(), Some(syn::Stmt::Expr(e, None)) if is_err_call(e));
        if !tail_is_err {
            let end = body.brace_token.span.close();
            covenant
                .events
                .push((position(end), Event::Exit(end.start().line)));
        }
        for refusal in covenant.verdict() {
            self.refusals.push(refusal);
        }
    }
}

impl<'ast> Visit<'ast> for Gate {
    // syn hands back what it parses but does not model as `Verbatim` tokens, which no other
    // visit looks into (`use {::std::include_str as concat};`, `fn f();`): a method has none.
    fn visit_item(&mut self, node: &'ast syn::Item) {
        if let syn::Item::Verbatim(tokens) = node {
            self.refuse_verbatim(tokens);
        }
        visit::visit_item(self, node);
    }

    fn visit_expr(&mut self, node: &'ast syn::Expr) {
        if let syn::Expr::Verbatim(tokens) = node {
            self.refuse_verbatim(tokens);
        }
        visit::visit_expr(self, node);
    }

    fn visit_pat(&mut self, node: &'ast syn::Pat) {
        if let syn::Pat::Verbatim(tokens) = node {
            self.refuse_verbatim(tokens);
        }
        visit::visit_pat(self, node);
    }

    fn visit_type(&mut self, node: &'ast syn::Type) {
        if let syn::Type::Verbatim(tokens) = node {
            self.refuse_verbatim(tokens);
        }
        visit::visit_type(self, node);
    }

    fn visit_impl_item(&mut self, node: &'ast syn::ImplItem) {
        if let syn::ImplItem::Verbatim(tokens) = node {
            self.refuse_verbatim(tokens);
        }
        visit::visit_impl_item(self, node);
    }

    fn visit_trait_item(&mut self, node: &'ast syn::TraitItem) {
        if let syn::TraitItem::Verbatim(tokens) = node {
            self.refuse_verbatim(tokens);
        }
        visit::visit_trait_item(self, node);
    }

    fn visit_type_param_bound(&mut self, node: &'ast syn::TypeParamBound) {
        if let syn::TypeParamBound::Verbatim(tokens) = node {
            self.refuse_verbatim(tokens);
        }
        visit::visit_type_param_bound(self, node);
    }

    fn visit_foreign_item(&mut self, node: &'ast syn::ForeignItem) {
        if let syn::ForeignItem::Verbatim(tokens) = node {
            self.refuse_verbatim(tokens);
        }
        visit::visit_foreign_item(self, node);
    }

    fn visit_expr_unsafe(&mut self, node: &'ast syn::ExprUnsafe) {
        self.refuse(
            "unsafe",
            node.unsafe_token.span,
            "`unsafe` blocks are not allowed in a method",
        );
        visit::visit_expr_unsafe(self, node);
    }

    fn visit_signature(&mut self, node: &'ast syn::Signature) {
        self.refuse_unsafety(&node.unsafety, "`unsafe fn`");
        self.refuse_abi(&node.abi, "`extern` functions");
        visit::visit_signature(self, node);
    }

    fn visit_item_impl(&mut self, node: &'ast syn::ItemImpl) {
        self.refuse_unsafety(&node.unsafety, "`unsafe impl`");
        visit::visit_item_impl(self, node);
    }

    fn visit_item_trait(&mut self, node: &'ast syn::ItemTrait) {
        self.refuse_unsafety(&node.unsafety, "`unsafe trait`");
        visit::visit_item_trait(self, node);
    }

    fn visit_type_bare_fn(&mut self, node: &'ast syn::TypeBareFn) {
        self.refuse_unsafety(&node.unsafety, "`unsafe fn` types");
        self.refuse_abi(&node.abi, "`extern` fn types");
        visit::visit_type_bare_fn(self, node);
    }

    /// `use std::include_str as json;` would smuggle a forbidden macro in under an allowed name:
    /// a method may not import a forbidden macro, nor rename any import, wherever it stands.
    fn visit_use_tree(&mut self, node: &'ast syn::UseTree) {
        let original = match node {
            syn::UseTree::Name(name) => Some(&name.ident),
            syn::UseTree::Rename(rename) => {
                self.refuse(
                    "macro",
                    rename.rename.span(),
                    format!(
                        "renaming an import (`{} as {}`) is not allowed in a method: it could hide which macro runs",
                        rename.ident, rename.rename
                    ),
                );
                Some(&rename.ident)
            }
            _ => None,
        };
        if let Some(original) = original
            && FORBIDDEN_MACROS.contains(&original.to_string().as_str())
        {
            self.refuse(
                "macro",
                original.span(),
                format!("importing the macro `{original}` is not allowed in a method"),
            );
        }
        visit::visit_use_tree(self, node);
    }

    fn visit_item_foreign_mod(&mut self, node: &'ast syn::ItemForeignMod) {
        self.refuse(
            "extern",
            node.abi.extern_token.span,
            "`extern` blocks (FFI) are not allowed in a method",
        );
    }

    fn visit_item_extern_crate(&mut self, node: &'ast syn::ItemExternCrate) {
        self.refuse(
            "extern",
            node.extern_token.span,
            "`extern crate` is not allowed in a method",
        );
    }

    fn visit_item_mod(&mut self, node: &'ast syn::ItemMod) {
        if node.content.is_none() {
            self.refuse(
                "module",
                node.mod_token.span,
                "`mod x;` would read another file: a method is one file",
            );
        }
        visit::visit_item_mod(self, node);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        let name = attr
            .path()
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        if attr.path().segments.len() != 1 || !ALLOWED_ATTRIBUTES.contains(&name.as_str()) {
            let shown = attr
                .path()
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect::<Vec<_>>()
                .join("::");
            self.refuse(
                "attribute",
                attr.span(),
                format!("the attribute `#[{shown}]` is not allowed in a method"),
            );
            return;
        }
        if name == "derive" {
            let _ = attr.parse_nested_meta(|meta| {
                let derive = meta
                    .path
                    .segments
                    .last()
                    .map(|s| s.ident.to_string())
                    .unwrap_or_default();
                if !ALLOWED_DERIVES.contains(&derive.as_str()) {
                    self.refuse(
                        "derive",
                        meta.path.span(),
                        format!("`#[derive({derive})]` is not allowed in a method"),
                    );
                }
                Ok(())
            });
        } else if let syn::Meta::List(list) = &attr.meta {
            self.scan_tokens(list.tokens.clone());
        } else if let syn::Meta::NameValue(pair) = &attr.meta {
            // `#[doc = include_str!("/etc/passwd")]`: the value is an expression like any other.
            self.visit_expr(&pair.value);
        }
    }

    fn visit_macro(&mut self, node: &'ast syn::Macro) {
        let name = node
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        if node.path.segments.len() != 1 {
            let shown = node
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect::<Vec<_>>()
                .join("::");
            self.refuse(
                "macro",
                node.path.span(),
                format!("the macro `{shown}!` is not allowed in a method"),
            );
        } else {
            self.check_macro_name(&name, node.path.span());
        }
        self.scan_tokens(node.tokens.clone());
    }

    fn visit_item_fn(&mut self, node: &'ast syn::ItemFn) {
        self.check_function(&node.sig, &node.block);
        visit::visit_item_fn(self, node);
    }

    fn visit_impl_item_fn(&mut self, node: &'ast syn::ImplItemFn) {
        self.check_function(&node.sig, &node.block);
        visit::visit_impl_item_fn(self, node);
    }
}

fn is_obj_type(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Reference(r) => is_obj_type(&r.elem),
        syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Obj"),
        _ => false,
    }
}

fn is_err_call(expr: &syn::Expr) -> bool {
    match expr {
        syn::Expr::Call(call) => {
            matches!(&*call.func, syn::Expr::Path(p) if p.path.is_ident("Err"))
        }
        _ => false,
    }
}

fn mentions_obj_constructor(tokens: TokenStream) -> bool {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    trees.iter().enumerate().any(|(i, t)| match t {
        TokenTree::Ident(id) if id == "Obj" => {
            matches!(trees.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == ':')
        }
        TokenTree::Group(g) => mentions_obj_constructor(g.stream()),
        _ => false,
    })
}

/// Whether the tokens call `Obj::create`.
fn mentions_obj_create(tokens: TokenStream) -> bool {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    trees.iter().enumerate().any(|(i, t)| match t {
        TokenTree::Ident(id) if id == "Obj" => {
            matches!(trees.get(i + 3), Some(TokenTree::Ident(c)) if c == "create")
        }
        TokenTree::Group(g) => mentions_obj_create(g.stream()),
        _ => false,
    })
}

fn position(span: Span) -> (usize, usize) {
    let start = span.start();
    (start.line, start.column)
}

#[derive(Debug, Clone)]
enum Event {
    Write(String, usize),
    Notify(String),
    Exit(usize),
}

/// The static covenant check for one function body: events in source order.
#[derive(Default)]
struct Covenant {
    objects: BTreeSet<String>,
    events: Vec<((usize, usize), Event)>,
}

impl Covenant {
    fn receiver(&self, expr: &syn::Expr) -> Option<String> {
        match expr {
            syn::Expr::Path(p) if p.path.segments.len() == 1 => {
                let name = p.path.segments[0].ident.to_string();
                self.objects.contains(&name).then_some(name)
            }
            syn::Expr::Reference(r) => self.receiver(&r.expr),
            syn::Expr::Paren(p) => self.receiver(&p.expr),
            _ => None,
        }
    }

    fn verdict(mut self) -> Vec<Refusal> {
        self.events.sort_by_key(|(pos, _)| *pos);
        let mut written: BTreeMap<String, usize> = BTreeMap::new();
        let mut notified: BTreeSet<String> = BTreeSet::new();
        let mut refusals = Vec::new();
        for (_, event) in self.events {
            match event {
                Event::Write(name, line) => {
                    written.entry(name).or_insert(line);
                }
                Event::Notify(name) => {
                    notified.insert(name);
                }
                Event::Exit(line) => {
                    for (name, write_line) in &written {
                        if !notified.contains(name) {
                            refusals.push(Refusal {
                                rule: "covenant",
                                line,
                                message: format!(
                                    "this exit follows a write to `{name}` (line {write_line}) with no \
                                     `{name}.notify_changed()` before it: notify every object you change"
                                ),
                            });
                        }
                    }
                }
            }
        }
        refusals
    }
}

impl<'ast> Visit<'ast> for Covenant {
    fn visit_local(&mut self, node: &'ast syn::Local) {
        let typed_obj = matches!(&node.pat, syn::Pat::Type(t) if is_obj_type(&t.ty));
        let from_ctor = node
            .init
            .as_ref()
            .is_some_and(|init| mentions_obj_constructor(quote_tokens(&init.expr)));
        if typed_obj || from_ctor {
            let ident = match &node.pat {
                syn::Pat::Ident(i) => Some(&i.ident),
                syn::Pat::Type(t) => match &*t.pat {
                    syn::Pat::Ident(i) => Some(&i.ident),
                    _ => None,
                },
                _ => None,
            };
            if let Some(ident) = ident {
                self.objects.insert(ident.to_string());
                // A new object is a change like any other: it too must be notified.
                if node
                    .init
                    .as_ref()
                    .is_some_and(|init| mentions_obj_create(quote_tokens(&init.expr)))
                {
                    self.events.push((
                        position(ident.span()),
                        Event::Write(ident.to_string(), ident.span().start().line),
                    ));
                }
            }
        }
        visit::visit_local(self, node);
    }

    fn visit_expr_method_call(&mut self, node: &'ast syn::ExprMethodCall) {
        let method = node.method.to_string();
        let write = (method == "set" && node.args.len() == 2)
            || (method == "remove" && node.args.len() == 1);
        if let Some(name) = self.receiver(&node.receiver) {
            let at = position(node.method.span());
            if write {
                self.events
                    .push((at, Event::Write(name, node.method.span().start().line)));
            } else if method == "notify_changed" && node.args.is_empty() {
                self.events.push((at, Event::Notify(name)));
            }
        }
        visit::visit_expr_method_call(self, node);
    }

    fn visit_expr_return(&mut self, node: &'ast syn::ExprReturn) {
        let is_err = node.expr.as_deref().is_some_and(is_err_call);
        if !is_err {
            let span = node.return_token.span;
            self.events
                .push((position(span), Event::Exit(span.start().line)));
        }
        visit::visit_expr_return(self, node);
    }

    // A closure's `return` leaves the closure, not the method; its writes still count.
    fn visit_expr_closure(&mut self, node: &'ast syn::ExprClosure) {
        let mut inner = Covenant {
            objects: self.objects.clone(),
            events: Vec::new(),
        };
        inner.visit_expr(&node.body);
        self.events.extend(
            inner
                .events
                .into_iter()
                .filter(|(_, e)| !matches!(e, Event::Exit(_))),
        );
    }

    // Nested functions are checked on their own by the gate.
    fn visit_item_fn(&mut self, _node: &'ast syn::ItemFn) {}
}

fn quote_tokens(expr: &syn::Expr) -> TokenStream {
    let mut tokens = TokenStream::new();
    quote::ToTokens::to_tokens(expr, &mut tokens);
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(source: &str) -> Vec<(&'static str, usize)> {
        match check(source) {
            Ok(()) => vec![],
            Err(refusals) => refusals.into_iter().map(|r| (r.rule, r.line)).collect(),
        }
    }

    const HEADER: &str = "use batos_sdk::prelude::*;\n";

    fn method(body: &str) -> String {
        format!(
            "{HEADER}pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {{\n{body}\n}}\n"
        )
    }

    #[test]
    fn the_sdk_example_passes() {
        let src = method(
            "let n = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(0) + 1;\n\
             me.set(\"count\", json!(n))?;\nme.notify_changed();\nOk(json!(n))",
        );
        assert_eq!(rules(&src), vec![]);
    }

    #[test]
    fn each_rule_rejects_and_names_the_line() {
        let cases: &[(&str, &str)] = &[
            ("unsafe { core::hint::unreachable_unchecked() }", "unsafe"),
            (
                "let s = include_str!(\"/etc/passwd\"); Ok(json!(s))",
                "macro",
            ),
            ("let s = env!(\"HOME\"); Ok(json!(s))", "macro"),
            ("let s = option_env!(\"HOME\"); Ok(json!(s))", "macro"),
            (
                "let b = include_bytes!(\"/etc/hosts\"); Ok(json!(b.len()))",
                "macro",
            ),
            ("Ok(json!(format!(\"{}\", unsafe { 1 })))", "unsafe"),
            ("Ok(json!(format!(\"{}\", env!(\"HOME\"))))", "macro"),
            ("macro_rules! m { () => {} } Ok(json!(1))", "macro"),
            (
                "use std::include_str as json; Ok(json!(\"/etc/passwd\"))",
                "macro",
            ),
            ("use std::env as format; Ok(json!(1))", "macro"),
            // The attacks that got past the token denylist: an item, an import or an attribute
            // inside a block inside a macro's arguments.
            (
                "Ok(json!(format!(\"{}\", { use std::include_str as concat; concat!(\"/etc/passwd\") })))",
                "macro",
            ),
            (
                "Ok(json!(format!(\"{}\", { use std::include_bytes; 1 })))",
                "macro",
            ),
            (
                "Ok(json!({ #[path = \"/etc/passwd\"] mod m; 1 }))",
                "attribute",
            ),
            (
                "Ok(json!(format!(\"{}\", { static X: u8 = 1; X })))",
                "macro",
            ),
            ("Ok(json!(vec![{ fn f() -> u8 { 1 } f() }]))", "macro"),
            (
                "{ use std::collections::HashMap as Map; } Ok(json!(1))",
                "macro",
            ),
            (
                "{ #[path = \"/etc/passwd\"] mod m; } Ok(json!(1))",
                "attribute",
            ),
            ("Ok(json!(format!(\"{}\", unsafe_helper!())))", "macro"),
            // syn's Verbatim: a `use` group with a leading `::`, items without bodies.
            (
                "use {::std::include_str as concat}; Ok(json!(1))",
                "unchecked",
            ),
            ("fn f(); Ok(json!(1))", "unchecked"),
            (
                "fn f<T: const Tr<{ include_str!(\"/etc/passwd\").len() }>>() {} Ok(json!(1))",
                "unchecked",
            ),
        ];
        for (body, rule) in cases {
            let found = rules(&method(body));
            assert!(
                found.iter().any(|(r, line)| r == rule && *line == 3),
                "{body}: {found:?}"
            );
        }
    }

    #[test]
    fn a_use_group_with_a_leading_path_separator_is_refused_at_file_level() {
        let source = format!(
            "{HEADER}use {{::std::include_str as concat}};\npub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {{ Ok(json!(1)) }}\n"
        );
        let found = rules(&source);
        assert!(!found.is_empty(), "{found:?}");
    }

    #[test]
    fn expressions_in_macro_arguments_pass() {
        let body = "let n = args.len();\n\
            let xs: Vec<i64> = args.iter().map(|v| v.as_i64().unwrap_or(0)).collect();\n\
            let label = format!(\"{} of {:>4}\", match xs.first() { Some(x) => *x, None => 0 }, n as i64);\n\
            me.notify_changed();\n\
            Ok(json!({\"n\": n as u64, \"big\": if n > 2 { true } else { false }, \"xs\": vec![0; n], \"label\": label, \"s\": xs.iter().map(|x| x * 2).sum::<i64>()}))";
        assert_eq!(rules(&method(body)), vec![]);
    }

    #[test]
    fn items_that_reach_outside_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("extern \"C\" { fn getpid() -> i32; }", "extern"),
            ("extern crate std as s;", "extern"),
            ("#[no_mangle] pub fn f() {}", "attribute"),
            ("#[export_name = \"x\"] pub fn f() {}", "attribute"),
            ("#[link(name = \"c\")] pub fn f() {}", "attribute"),
            ("#[path = \"/etc/passwd\"] mod m;", "attribute"),
            ("mod other;", "module"),
            ("unsafe fn f() {}", "unsafe"),
            ("struct S; unsafe impl Send for S {}", "unsafe"),
            ("pub extern \"C\" fn f() {}", "extern"),
            ("#[derive(Serialize)] struct S;", "derive"),
            ("std::arch::global_asm!(\"nop\");", "macro"),
            (
                "#[doc = include_str!(\"/etc/passwd\")] pub fn f() {}",
                "macro",
            ),
            ("use std::include_bytes;", "macro"),
        ];
        for (item, rule) in cases {
            let src = format!("{}{item}\n", method("Ok(json!(1))"));
            let found = rules(&src);
            assert!(
                found.iter().any(|(r, line)| r == rule && *line == 5),
                "{item}: {found:?}"
            );
        }
        assert!(rules("#![allow(unused)]\npub fn run() {}").contains(&("attribute", 1)));
    }

    #[test]
    fn a_missing_run_and_bad_syntax_are_refused() {
        assert_eq!(rules("fn helper() {}"), vec![("entry-point", 1)]);
        assert_eq!(rules("pub fn run( {").first().map(|r| r.0), Some("syntax"));
    }

    #[test]
    fn covenant_write_without_notify_is_refused_at_the_exit() {
        let src = method("me.set(\"a\", json!(1))?;\nOk(json!(1))");
        assert_eq!(rules(&src), vec![("covenant", 5)]);
        let src = method(
            "me.remove(\"a\")?;\nif args.is_empty() { return Ok(json!(0)); }\nme.notify_changed();\nOk(json!(1))",
        );
        assert_eq!(rules(&src), vec![("covenant", 4)]);
    }

    #[test]
    fn covenant_accepts_notify_before_exits_and_error_exits() {
        let src = method(
            "me.set(\"a\", json!(1))?;\nif args.is_empty() { return Err(\"no\".into()); }\nme.notify_changed();\nOk(json!(1))",
        );
        assert_eq!(rules(&src), vec![]);
        let src = method("me.remove(\"a\")?;\nErr(\"always\".into())");
        assert_eq!(rules(&src), vec![]);
    }

    #[test]
    fn a_created_object_is_a_write_that_needs_its_notify() {
        let missing = method("let o = Obj::create(&me, json!({}))?;\nOk(json!(o.id()))");
        assert_eq!(rules(&missing), vec![("covenant", 5)]);
        let kept =
            method("let o = Obj::create(&me, json!({}))?;\no.notify_changed();\nOk(json!(o.id()))");
        assert_eq!(rules(&kept), vec![]);
    }

    #[test]
    fn covenant_tracks_objects_from_obj_constructors() {
        let src = method(
            "let other = Obj::named(\"counter\").ok_or(\"none\")?;\nother.set(\"count\", json!(0))?;\nme.notify_changed();\nOk(json!(1))",
        );
        assert_eq!(rules(&src), vec![("covenant", 7)]);
        // A vec's remove is not an object write.
        let src = method("let mut v = vec![1];\nv.remove(0);\nOk(json!(v))");
        assert_eq!(rules(&src), vec![]);
    }
}
