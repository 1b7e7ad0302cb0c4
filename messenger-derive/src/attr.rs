//! The `#[event(...)]` attributes: parsed leniently so that every mistake is reported, not only
//! the first one.
//!
//! The arguments are read in two steps. First the list is split into `key = value` pairs without
//! interpreting the values (only a malformed list, e.g. a missing `=` or `,`, stops this step).
//! Then each pair is interpreted on its own: an unknown key, a key given twice or a bad value is
//! reported to the [`Ctxt`] and the other pairs are still used.

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, Ident, LitStr, Meta, Path, Token, Type};

use crate::ctxt::Ctxt;

/// The attribute's name: `#[event(...)]`.
const EVENT: &str = "event";

/// The keys `#[event(...)]` knows, for the "unknown key" message.
const KNOWN_KEYS: &str = "`name`, `reply`, `crate` and `sender`";

/// What `#[event(...)]` on the type says. `None` means "not given, or given but invalid": the
/// invalid case is already reported, and the generated fallback uses the default.
#[derive(Default)]
pub struct Container {
    /// `name = "..."`: the wire name.
    pub name: Option<LitStr>,
    /// `reply = Type`.
    pub reply: Option<Type>,
    /// `crate = "path"` or `crate = path`: where the messenger crate is.
    pub krate: Option<Path>,
    /// `sender` (no value): the handler trait's methods get the sender, `from: Peer`. The key
    /// itself, for errors at its span.
    pub sender: Option<Ident>,
}

/// Where an `#[event(...)]` attribute was found, when it is not on the type itself.
#[derive(Clone, Copy)]
pub enum Misplaced {
    Variant,
    Field,
}

/// Reads every `#[event(...)]` attribute of the derived type, merging them (`#[event(name = "a")]
/// #[event(reply = u32)]` is the same as one attribute with both keys).
pub fn parse_container(cx: &Ctxt, attrs: &[Attribute]) -> Container {
    let mut pairs = Vec::new();
    for attr in attrs.iter().filter(|attr| is_event(attr)) {
        split_attr(cx, attr, &mut pairs);
    }

    let mut container = Container::default();
    // The keys seen so far, valid or not, to report a repeated key even when its first value
    // was invalid.
    let mut seen: Vec<String> = Vec::new();
    for pair in pairs {
        let key = pair.key.unraw().to_string();
        if !matches!(key.as_str(), "name" | "reply" | "crate" | "sender") {
            cx.error_spanned_by(
                &pair.key,
                format!("unknown key `{key}` in `#[event(...)]`; the known keys are {KNOWN_KEYS}"),
            );
            continue;
        }
        if seen.contains(&key) {
            cx.error_spanned_by(
                &pair.key,
                format!("`{key}` is given twice in `#[event(...)]`; give it once"),
            );
            continue;
        }
        seen.push(key.clone());

        if key == "sender" {
            match &pair.value {
                None => container.sender = Some(pair.key.clone()),
                Some((eq, _)) => cx.error_spanned_by(
                    eq,
                    "`sender` takes no value: write `#[event(sender)]`, and the handler \
                     methods get the sender as their first parameter, `from: Peer`",
                ),
            }
            continue;
        }
        let Some(value) = pair_value(cx, &pair, &key) else {
            continue;
        };
        match key.as_str() {
            "name" => container.name = parse_name(cx, value),
            "reply" => container.reply = parse_reply(cx, value),
            _ => container.krate = parse_crate(cx, value),
        }
    }
    container
}

/// Reports each `#[event(...)]` on a variant or a field: the attribute only belongs on the type.
pub fn reject_misplaced(cx: &Ctxt, attrs: &[Attribute], place: Misplaced, type_name: &Ident) {
    let place = match place {
        Misplaced::Variant => "a variant",
        Misplaced::Field => "a field",
    };
    for attr in attrs.iter().filter(|attr| is_event(attr)) {
        cx.error_spanned_by(
            attr,
            format!(
                "`#[event(...)]` is not supported on {place}; put it on the type `{type_name}`, \
                 where it applies to the whole event (one name and one reply type for all of it)"
            ),
        );
    }
}

fn is_event(attr: &Attribute) -> bool {
    attr.path().is_ident(EVENT)
}

/// One `key` or `key = value` of the list, the value still unparsed.
struct Pair {
    key: Ident,
    /// The `=` (for the span of a missing value) and the tokens up to the next top-level comma.
    value: Option<(Token![=], TokenStream)>,
}

/// Splits one `#[event(...)]` into pairs, appending them to `pairs`. On a malformed list, the
/// pairs before the mistake are kept and the mistake is reported.
fn split_attr(cx: &Ctxt, attr: &Attribute, pairs: &mut Vec<Pair>) {
    const EXAMPLE: &str = "e.g. `#[event(name = \"ping\", reply = u32)]`";
    let list = match &attr.meta {
        Meta::List(list) => list,
        Meta::Path(path) => {
            let msg = format!("`#[event]` needs arguments, {EXAMPLE}; the keys are {KNOWN_KEYS}");
            return cx.error_spanned_by(path, msg);
        }
        Meta::NameValue(nv) => {
            let msg = format!("expected `#[event(...)]` with a list of arguments, {EXAMPLE}");
            return cx.error_spanned_by(nv, msg);
        }
    };
    if list.tokens.is_empty() {
        let msg = format!("`#[event()]` has no arguments, {EXAMPLE}; remove it or add a key");
        return cx.error_spanned_by(attr, msg);
    }
    let parser = |input: ParseStream| split_pairs(input, pairs);
    if let Err(err) = parser.parse2(list.tokens.clone()) {
        cx.syn_error(err);
    }
}

fn split_pairs(input: ParseStream, pairs: &mut Vec<Pair>) -> syn::Result<()> {
    while !input.is_empty() {
        // `parse_any`: `crate` is a keyword.
        let key = Ident::parse_any(input).map_err(|err| {
            syn::Error::new(err.span(), format!("expected a key: one of {KNOWN_KEYS}"))
        })?;
        let value = if input.peek(Token![=]) {
            let eq: Token![=] = input.parse()?;
            Some((eq, value_tokens(input)))
        } else if input.is_empty() || input.peek(Token![,]) {
            None
        } else {
            return Err(input.error(format!("expected `=` after `{key}`")));
        };
        pairs.push(Pair { key, value });
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
        }
    }
    Ok(())
}

/// Takes the tokens of a value: everything up to the next comma that is not inside brackets,
/// including angle brackets (a type like `HashMap<String, u32>` has a comma inside `<>`, which
/// are plain punctuation, not a group).
fn value_tokens(input: ParseStream) -> TokenStream {
    let step = input.step(|cursor| {
        let mut tokens = TokenStream::new();
        let mut angle_depth = 0usize;
        // Whether the previous token is a `-` joined to the next one, to tell `->` from `>`.
        let mut after_joint_minus = false;
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if let TokenTree::Punct(punct) = &tt {
                match punct.as_char() {
                    ',' if angle_depth == 0 => break,
                    '<' => angle_depth += 1,
                    '>' if !after_joint_minus => angle_depth = angle_depth.saturating_sub(1),
                    _ => {}
                }
            }
            after_joint_minus = matches!(
                &tt,
                TokenTree::Punct(p) if p.as_char() == '-' && p.spacing() == Spacing::Joint
            );
            tokens.extend([tt]);
            rest = next;
        }
        Ok((tokens, rest))
    });
    step.unwrap_or_default()
}

/// The value of a pair, or reports that it is missing (`#[event(name)]`, `#[event(name = )]`).
fn pair_value<'a>(cx: &Ctxt, pair: &'a Pair, key: &str) -> Option<&'a TokenStream> {
    let example = match key {
        "name" => "name = \"ping\"",
        "reply" => "reply = u32",
        _ => "crate = \"::messenger\"",
    };
    match &pair.value {
        None => {
            cx.error_spanned_by(&pair.key, format!("`{key}` needs a value: `{example}`"));
            None
        }
        Some((eq, tokens)) if tokens.is_empty() => {
            let msg = format!("expected a value after `=`: `{example}`");
            cx.error_spanned_by(eq, msg);
            None
        }
        Some((_, tokens)) => Some(tokens),
    }
}

/// Why a value could not be used.
enum Invalid {
    /// Not the expected kind of value: the caller reports it, with a message for its key.
    Wrong,
    /// Already reported (a forgotten comma).
    Reported,
}

/// Parses all of `value` with `parse`. A value that starts right and goes on is most likely a
/// forgotten comma (`name = "ping" reply = u32`) and is reported as such, instead of "`name` must
/// be a string literal", which would be puzzling.
fn parse_value<T>(
    cx: &Ctxt,
    key: &str,
    value: &TokenStream,
    parse: impl FnOnce(ParseStream) -> syn::Result<T>,
) -> Result<T, Invalid> {
    let parser = |input: ParseStream| Ok((parse(input)?, input.parse::<TokenStream>()?));
    match parser.parse2(value.clone()) {
        Err(_) => Err(Invalid::Wrong),
        Ok((parsed, rest)) if rest.is_empty() => Ok(parsed),
        Ok((_, rest)) => {
            let msg =
                format!("unexpected `{rest}` after the value of `{key}`; is a comma missing?");
            cx.error_spanned_by(rest, msg);
            Err(Invalid::Reported)
        }
    }
}

/// `name = "..."`: a non-empty string literal.
fn parse_name(cx: &Ctxt, value: &TokenStream) -> Option<LitStr> {
    let lit = match parse_value(cx, "name", value, |input| input.parse::<LitStr>()) {
        Ok(lit) => lit,
        Err(Invalid::Reported) => return None,
        Err(Invalid::Wrong) => {
            let msg = "`name` must be a string literal, e.g. `name = \"ping\"`";
            cx.error_spanned_by(value, msg);
            return None;
        }
    };
    if lit.value().is_empty() {
        let msg = "`name` must not be empty: it identifies the event on the wire";
        cx.error_spanned_by(&lit, msg);
        return None;
    }
    Some(lit)
}

/// `reply = Type`. A quoted type gets a hint, since `#[serde(bound = "...")]` and the like take
/// strings and the habit is easy to carry over.
fn parse_reply(cx: &Ctxt, value: &TokenStream) -> Option<Type> {
    if let Ok(lit) = syn::parse2::<LitStr>(value.clone()) {
        let msg = format!(
            "`reply` takes a type, not a string: write `reply = {}`",
            lit.value()
        );
        cx.error_spanned_by(value, msg);
        return None;
    }
    match parse_value(cx, "reply", value, |input| input.parse::<Type>()) {
        Ok(ty) => Some(ty),
        Err(Invalid::Reported) => None,
        Err(Invalid::Wrong) => {
            let msg = "`reply` must be a type, e.g. `reply = u32` or `reply = Vec<String>`";
            cx.error_spanned_by(value, msg);
            None
        }
    }
}

/// `crate = "path"` (as serde's `#[serde(crate = "...")]`) or `crate = path`.
fn parse_crate(cx: &Ctxt, value: &TokenStream) -> Option<Path> {
    let parse = |input: ParseStream| {
        if input.peek(LitStr) {
            input.parse::<LitStr>()?.parse_with(Path::parse_mod_style)
        } else {
            Path::parse_mod_style(input)
        }
    };
    match parse_value(cx, "crate", value, parse) {
        Ok(path) => Some(path),
        Err(Invalid::Reported) => None,
        Err(Invalid::Wrong) => {
            let msg = "`crate` must be the path of the messenger crate, as a string or a path: \
                       `crate = \"::messenger\"` or `crate = ::messenger`";
            cx.error_spanned_by(value, msg);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn split(tokens: TokenStream) -> Vec<String> {
        let mut pairs = Vec::new();
        let parser = |input: ParseStream| split_pairs(input, &mut pairs);
        parser.parse2(tokens).unwrap();
        pairs
            .iter()
            .map(|pair| match &pair.value {
                Some((_, value)) => format!("{} = {value}", pair.key),
                None => pair.key.to_string(),
            })
            .collect()
    }

    #[test]
    fn splits_on_top_level_commas_only() {
        let pairs = split(quote!(reply = HashMap<String, Vec<u8>>, crate = "x"));
        assert_eq!(
            pairs,
            ["reply = HashMap < String , Vec < u8 >>", "crate = \"x\""]
        );
    }

    #[test]
    fn arrows_do_not_close_angle_brackets() {
        let pairs = split(quote!(reply = Box<dyn Fn(u8) -> u8>, name = "n"));
        assert_eq!(pairs, ["reply = Box < dyn Fn (u8) -> u8 >", "name = \"n\""]);
    }

    #[test]
    fn keeps_keys_without_values() {
        assert_eq!(split(quote!(name, crate)), ["name", "crate"]);
    }
}
