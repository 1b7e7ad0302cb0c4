//! The rules an input must follow beyond well-formed attributes. Each broken rule is reported to
//! the [`Ctxt`]; [`crate::generate`] copes with the broken input so that no further error follows.

use syn::GenericParam;

use crate::ast::{Data, Input, Variant};
use crate::ctxt::Ctxt;

pub fn check(cx: &Ctxt, input: &Input) {
    check_generics(cx, input);
    match &input.data {
        Data::Enum(variants) => {
            check_not_empty(cx, input, variants);
            check_method_names(cx, variants);
            if input.attrs.sender.is_some() {
                check_sender_param(cx, variants);
            }
        }
        Data::Struct => {
            if let Some(sender) = &input.attrs.sender {
                let msg = "`sender` is for an enum: it gives the methods of its handler trait the \
                           sender (`from: Peer`); a struct's handler learns it when registered \
                           with `Messenger::on_from`";
                cx.error_spanned_by(sender, msg);
            }
        }
    }
}

/// With `sender`, every handler method's first parameter is `from`: a field of that name would
/// be a second parameter with the same name.
fn check_sender_param(cx: &Ctxt, variants: &[Variant]) {
    for variant in variants {
        if let Some(field) = variant.fields.iter().find(|f| f.param == "from") {
            let msg = format!(
                "a field named `from` clashes with the sender parameter that `#[event(sender)]` \
                 gives the handler method `{}`; rename the field",
                variant.method.snake
            );
            cx.error_spanned_by(&field.param, msg);
        }
    }
}

/// An event is one concrete, owned type: its wire name must name one type (`Wrapper<u8>` and
/// `Wrapper<String>` would share it), and it is deserialized as `DeserializeOwned`, so it cannot
/// borrow. One error for the lifetimes and one for the type and const parameters, each at the
/// first such parameter.
fn check_generics(cx: &Ctxt, input: &Input) {
    let params = &input.generics.params;
    let lifetime = params
        .iter()
        .find(|p| matches!(p, GenericParam::Lifetime(_)));
    if let Some(lifetime) = lifetime {
        let msg = "an event cannot have lifetime parameters: events are sent between processes \
                   and deserialized as owned values (`DeserializeOwned`); use owned types such \
                   as `String` instead of `&str`";
        cx.error_spanned_by(lifetime, msg);
    }
    let generic = params
        .iter()
        .find(|p| !matches!(p, GenericParam::Lifetime(_)));
    if let Some(generic) = generic {
        let kind = match generic {
            GenericParam::Const(_) => "const",
            _ => "type",
        };
        let msg = format!(
            "`#[derive(Event)]` does not support {kind} parameters: the wire name must name one \
             type; derive it on a concrete type instead (e.g. a struct wrapping the instance you \
             need)"
        );
        cx.error_spanned_by(generic, msg);
    }
}

fn check_not_empty(cx: &Ctxt, input: &Input, variants: &[Variant]) {
    if variants.is_empty() {
        let msg = format!(
            "an enum event needs at least one variant: each variant becomes a method of \
             `{}`, and an enum without variants has no value to send",
            input.handler_trait()
        );
        cx.error_spanned_by(input.ident, msg);
    }
}

/// Each variant needs a method name that is an identifier, and no two variants the same one
/// (`FooBar` and `Foo_Bar` are both `foo_bar`). Collisions are reported at the later variant.
fn check_method_names(cx: &Ctxt, variants: &[Variant]) {
    for (i, variant) in variants.iter().enumerate() {
        let method = &variant.method;
        if method.ident.is_none() {
            cx.error_spanned_by(variant.ident, unusable_method_message(variant));
            continue;
        }
        let earlier = variants[..i]
            .iter()
            .find(|v| v.method.snake == method.snake);
        if let Some(earlier) = earlier {
            let msg = format!(
                "variants `{}` and `{}` would both become the handler method `{}`; rename one \
                 of them",
                earlier.ident, variant.ident, method.snake
            );
            cx.error_spanned_by(variant.ident, msg);
        }
    }
}

fn unusable_method_message(variant: &Variant) -> String {
    let snake = &variant.method.snake;
    let why = if snake.is_empty() {
        "it has no letters or digits to make a snake_case method name from".to_string()
    } else if snake.starts_with(|c: char| c.is_ascii_digit()) {
        format!("its snake_case method name `{snake}` would start with a digit")
    } else {
        format!("its snake_case method name `{snake}` is a keyword that cannot be a raw identifier")
    };
    format!(
        "variant `{}` cannot become a handler method: {why}; rename the variant",
        variant.ident
    )
}
