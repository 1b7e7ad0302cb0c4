//! `#[derive(Event)]` for `multiprocess`. Use it through `multiprocess` (or its messenger crate,
//! `multiprocess-messenger`), which re-exports it next to the `Event` trait; see
//! [`macro@Event`].

#![warn(missing_docs)]

// The derive runs in three steps, as serde_derive does:
//
// - `ast` (with `attr`): the `syn` input to an internal description, attributes parsed;
// - `check`: the rules the input must follow;
// - `generate`: the code.
//
// Every step reports into one `ctxt::Ctxt`, so all the errors come out together.

mod ast;
mod attr;
mod check;
mod ctxt;
mod generate;
mod krate;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Derives `multiprocess::Event`: a type becomes a message that the processes of a cluster send
/// each other, with a wire name and a reply type.
///
/// The type must also implement `Serialize` and `Deserialize` (derive them with serde): events
/// travel as MessagePack.
///
/// # On a struct
///
/// Any struct (with named fields, a tuple struct or a unit struct) gets
///
/// ```text
/// impl multiprocess::Event for Ping {
///     const NAME: &'static str = "Ping";   // the type's name, or `name = "..."`
///     type Reply = ();                     // or `reply = Type`
/// }
/// ```
///
/// # On an enum
///
/// An enum is one event, whose values are its variants, handled by one object with a method per
/// variant. `#[derive(Event)]` on `enum Admin` generates, besides `impl Event for Admin`:
///
/// - a handler trait `AdminHandler` (the enum's name + `Handler`), with the enum's visibility:
///
///   ```text
///   #[multiprocess::async_trait]
///   pub trait AdminHandler: Send + Sync + 'static {
///       async fn echo(&self, arg0: String) -> <reply>;        // Admin::Echo(String)
///       async fn set_level(&self, level: u8) -> <reply>;      // Admin::SetLevel { level: u8 }
///       async fn shutdown(&self) -> <reply>;                  // Admin::Shutdown
///   }
///   ```
///
///   One method per variant, named after the variant in snake_case (`SetLevel` -> `set_level`;
///   a keyword becomes a raw identifier: `Type` -> `r#type`). The parameters are the variant's
///   fields: `arg0`, `arg1`, ... for a tuple variant, the field names for a struct variant, none
///   for a unit variant. Every method returns the event's reply type. The trait and its methods
///   are documented, so `#![deny(missing_docs)]` is fine. `Self` in a field type or in the reply
///   type means the enum, as it does in the enum.
///
/// - `impl multiprocess::Dispatch for Admin`, with `type Handler = dyn AdminHandler`: `dispatch`
///   calls the method of the value's variant, with its fields, and returns its reply. A handler is
///   registered as an `Arc<dyn AdminHandler>` with `Messenger::handle`.
///
/// # Attributes
///
/// All optional, on the type, in one `#[event(...)]` or several:
///
/// - `#[event(name = "admin")]`: the wire name, a non-empty string. Default: the type's name.
///   Processes agree on events by this name, so set it explicitly if the type may be renamed.
/// - `#[event(reply = Type)]`: the type a handler answers with, any type that is `Serialize +
///   DeserializeOwned + Send + 'static` (`reply = Vec<Option<String>>`). Default: `()`.
/// - `#[event(sender)]`, on an enum: every method of the handler trait gets, first, who sent
///   the event: `async fn echo(&self, from: Peer, arg0: String)`. The Hub stamps it from the
///   connection the event came on, so it cannot be forged. (A struct's handler is a closure:
///   `Messenger::on_from` gives it the sender.)
/// - `#[event(crate = "path")]` (or `crate = path`): the path of the crate that defines `Event`
///   (`multiprocess`, or its messenger crate). By default the derive reads your `Cargo.toml`:
///   `::multiprocess` if you depend on `multiprocess`, else `::messenger` if you depend on
///   `multiprocess-messenger` (whose library is `messenger`), following a renamed dependency
///   either way; `::multiprocess` if neither is found. Set it when you reach the crate through a
///   re-export of your own.
///
/// # Not supported
///
/// Each of these is a compile error that says why: generic parameters (the wire name must name
/// one type) and lifetime parameters (events are deserialized as owned values); unions; an enum
/// without variants; two variants with the same snake_case name (`FooBar` and `Foo_Bar`); a
/// variant whose snake_case name cannot be a method (`Super`); `#[event(...)]` on a variant or a
/// field (it belongs on the type); `sender` on a struct, or beside a variant field named `from`. All the errors of one type are reported together.
///
/// The generated code names everything by absolute paths, so your own `Event`, `Result` or `Arc`
/// in scope do not disturb it. One exception comes from `#[async_trait]`, which writes `Box`
/// unqualified: a type of your own named `Box` in the module of an enum event breaks its handler
/// trait (dtolnay/async-trait#132; it would break your `#[async_trait] impl` of it too).
///
/// # Example
///
/// ```
/// use std::sync::Arc;
///
/// use multiprocess::{async_trait, Dispatch, Event};
/// use serde::{Deserialize, Serialize};
///
/// /// Asks a worker for its process id.
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(name = "pid", reply = u32)]
/// struct Pid;
///
/// /// Administration of a worker.
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(reply = String)]
/// pub enum Admin {
///     Echo(String),
///     SetLevel { level: u8 },
///     Shutdown,
/// }
///
/// struct Worker;
///
/// #[async_trait]
/// impl AdminHandler for Worker {
///     async fn echo(&self, arg0: String) -> String {
///         arg0
///     }
///     async fn set_level(&self, level: u8) -> String {
///         format!("level {level}")
///     }
///     async fn shutdown(&self) -> String {
///         "bye".to_string()
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(<Pid as Event>::NAME, "pid");
///
/// let handler: Arc<dyn AdminHandler> = Arc::new(Worker);
/// // What `Messenger::handle` does with each event (the Hub gives the sender):
/// let reply = Admin::SetLevel { level: 3 }.dispatch(multiprocess::Peer::Master, handler).await;
/// assert_eq!(reply, "level 3");
/// # }
/// ```
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).into()
}

/// Parses, checks and generates. With errors, the output is the errors plus the code generated
/// from what was understood (see [`generate`]): the user's uses of the type and of its handler
/// trait still type-check, so only the real errors show.
fn expand(input: &DeriveInput) -> proc_macro2::TokenStream {
    let cx = ctxt::Ctxt::new();
    let ast = ast::Input::from_syn(&cx, input);
    if let Some(ast) = &ast {
        check::check(&cx, ast);
    }
    let generated = ast.as_ref().map(generate::expand).unwrap_or_default();
    match cx.check() {
        Ok(()) => generated,
        Err(errors) => {
            let mut tokens = errors.to_compile_error();
            tokens.extend(generated);
            tokens
        }
    }
}
