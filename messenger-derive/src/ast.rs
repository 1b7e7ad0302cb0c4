//! The input as this derive sees it: `syn`'s `DeriveInput` reduced to what generation needs, with
//! the attributes parsed and the handler method names computed.
//!
//! Building it reports attribute mistakes; the semantic rules (no generics, at least one variant,
//! distinct method names, ...) are in [`crate::check`].

use heck::ToSnakeCase;
use proc_macro2::{Ident, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::{Data as SynData, DeriveInput, Fields, Generics, Type, Visibility};

use crate::attr::{self, Container, Misplaced};
use crate::ctxt::Ctxt;

pub struct Input<'a> {
    pub ident: &'a Ident,
    pub vis: &'a Visibility,
    pub generics: &'a Generics,
    pub attrs: Container,
    pub data: Data<'a>,
}

pub enum Data<'a> {
    /// A struct of any shape: its fields do not matter to the derive.
    Struct,
    Enum(Vec<Variant<'a>>),
}

pub struct Variant<'a> {
    pub ident: &'a Ident,
    pub style: Style,
    pub fields: Vec<Field>,
    pub method: Method,
}

/// The handler method of a variant: the variant's name in snake_case.
pub struct Method {
    /// The snake_case name, without `r#`.
    pub snake: String,
    /// The method's identifier (raw if the name is a keyword), or `None` when the name cannot be
    /// an identifier at all (`super`, or a variant like `__` with no letters): `check` reports it.
    pub ident: Option<Ident>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Unit,
    Tuple,
    Struct,
}

pub struct Field {
    /// The parameter of the handler method: the field's name, or `arg0`, `arg1`, ... for a
    /// tuple variant.
    pub param: Ident,
    /// The field's name in a struct variant (for the pattern in `dispatch`).
    pub name: Option<Ident>,
    /// The field's type with `Self` replaced by the enum's name: in the handler trait, `Self`
    /// would mean the handler.
    pub ty: Type,
}

impl<'a> Input<'a> {
    /// `None` for a union, which has no usable shape (reported).
    pub fn from_syn(cx: &Ctxt, input: &'a DeriveInput) -> Option<Self> {
        let attrs = attr::parse_container(cx, &input.attrs);
        let data = match &input.data {
            SynData::Struct(data) => {
                reject_on_fields(cx, &data.fields, &input.ident);
                Data::Struct
            }
            SynData::Enum(data) => {
                let variants = data
                    .variants
                    .iter()
                    .map(|v| Variant::from_syn(cx, v, &input.ident));
                Data::Enum(variants.collect())
            }
            SynData::Union(data) => {
                let msg = "`#[derive(Event)]` does not support unions: use a struct or an enum";
                cx.error_spanned_by(data.union_token, msg);
                return None;
            }
        };
        Some(Input {
            ident: &input.ident,
            vis: &input.vis,
            generics: &input.generics,
            attrs,
            data,
        })
    }

    /// The enum's handler trait: `Admin` -> `AdminHandler`.
    pub fn handler_trait(&self) -> Ident {
        Ident::new(&format!("{}Handler", self.ident.unraw()), self.ident.span())
    }
}

impl<'a> Variant<'a> {
    fn from_syn(cx: &Ctxt, variant: &'a syn::Variant, enum_ident: &Ident) -> Self {
        attr::reject_misplaced(cx, &variant.attrs, Misplaced::Variant, enum_ident);
        reject_on_fields(cx, &variant.fields, enum_ident);
        let style = match &variant.fields {
            Fields::Unit => Style::Unit,
            Fields::Unnamed(_) => Style::Tuple,
            Fields::Named(_) => Style::Struct,
        };
        let fields = variant.fields.iter().enumerate();
        let fields = fields.map(|(i, field)| Field {
            param: match &field.ident {
                Some(name) => name.clone(),
                None => Ident::new(&format!("arg{i}"), proc_macro2::Span::call_site()),
            },
            name: field.ident.clone(),
            ty: replace_self(&field.ty, enum_ident),
        });
        Variant {
            ident: &variant.ident,
            style,
            fields: fields.collect(),
            method: Method::for_variant(&variant.ident),
        }
    }
}

impl Method {
    fn for_variant(variant: &Ident) -> Self {
        let snake = variant.unraw().to_string().to_snake_case();
        let span = variant.span();
        let ident = if is_raw_keyword(&snake) {
            Some(Ident::new_raw(&snake, span))
        } else if syn::parse_str::<Ident>(&snake).is_ok() {
            Some(Ident::new(&snake, span))
        } else {
            // Empty, a keyword that cannot be raw, or starting with a digit (`_2Fa` -> `2_fa`).
            None
        };
        Method { snake, ident }
    }
}

/// Keywords a method can still be named with a raw identifier (`r#type`). `self`, `super` and
/// `crate` (and `Self`, but snake_case has no capitals) cannot be raw identifiers. Includes the
/// keywords reserved for later editions, as the user's crate may be on any edition.
fn is_raw_keyword(name: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "do",
        "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in",
        "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
        "return", "static", "struct", "trait", "true", "try", "type", "typeof", "unsafe",
        "unsized", "use", "virtual", "where", "while", "yield",
    ];
    KEYWORDS.contains(&name)
}

/// Reports `#[event(...)]` on the fields of a struct or a variant.
fn reject_on_fields(cx: &Ctxt, fields: &Fields, type_name: &Ident) {
    for field in fields {
        attr::reject_misplaced(cx, &field.attrs, Misplaced::Field, type_name);
    }
}

/// `Self` in a field type means the enum; once the type is a handler method's parameter, `Self`
/// would mean the handler. So every `Self` token is replaced by the enum's name (tokens, not a
/// syntax walk, so that `Self` inside a macro type like `ty!(Self)` is replaced too).
pub fn replace_self(ty: &Type, enum_ident: &Ident) -> Type {
    let tokens = replace_self_tokens(quote::ToTokens::to_token_stream(ty), enum_ident);
    // Replacing an identifier by an identifier keeps the type well-formed; should it not, the
    // original type still compiles in the enum and gives rustc's own error in the trait.
    syn::parse2(tokens).unwrap_or_else(|_| ty.clone())
}

fn replace_self_tokens(tokens: TokenStream, enum_ident: &Ident) -> TokenStream {
    let replace = |tt: TokenTree| match tt {
        TokenTree::Ident(ident) if ident == "Self" => {
            let mut replaced = enum_ident.clone();
            replaced.set_span(ident.span());
            TokenTree::Ident(replaced)
        }
        TokenTree::Group(group) => {
            let inner = replace_self_tokens(group.stream(), enum_ident);
            let mut replaced = proc_macro2::Group::new(group.delimiter(), inner);
            replaced.set_span(group.span());
            TokenTree::Group(replaced)
        }
        other => other,
    };
    tokens.into_iter().map(replace).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::{format_ident, quote};

    fn method(variant: &str) -> Option<String> {
        let ident = syn::parse_str::<Ident>(variant).unwrap();
        Method::for_variant(&ident)
            .ident
            .map(|ident| ident.to_string())
    }

    #[test]
    fn method_names_are_snake_case() {
        assert_eq!(method("Echo").as_deref(), Some("echo"));
        assert_eq!(method("SetLogLevel").as_deref(), Some("set_log_level"));
        assert_eq!(method("HTTPRequest").as_deref(), Some("http_request"));
        assert_eq!(method("r#Raw").as_deref(), Some("raw"));
    }

    #[test]
    fn keywords_become_raw_identifiers() {
        assert_eq!(method("Type").as_deref(), Some("r#type"));
        assert_eq!(method("Match").as_deref(), Some("r#match"));
        assert_eq!(method("Gen").as_deref(), Some("r#gen"));
    }

    #[test]
    fn impossible_method_names_are_none() {
        assert_eq!(method("Super"), None);
        assert_eq!(method("Crate"), None);
        assert_eq!(method("__"), None);
        assert_eq!(method("_2Fa"), None);
    }

    #[test]
    fn self_is_replaced_inside_groups_and_generics() {
        let ty: Type = syn::parse_quote!(Vec<(Box<Self>, [Self; 2])>);
        let replaced = replace_self(&ty, &format_ident!("List"));
        let expected = quote!(Vec<(Box<List>, [List; 2])>);
        assert_eq!(quote!(#replaced).to_string(), expected.to_string());
    }
}
