//! Where the messenger crate is, from the user's crate: the generated code names
//! `<krate>::Event`, `<krate>::Dispatch`, `<krate>::BoxFuture` and `<krate>::async_trait`.

use proc_macro_crate::{crate_name, FoundCrate};
use syn::Path;

/// The facade that re-exports everything of `messenger`: preferred, since a user of the facade
/// may not depend on `messenger` directly.
const FACADE: &str = "multiprocess";
const MESSENGER: &str = "messenger";

/// The path of the messenger crate as seen from the crate being compiled, found in its
/// `Cargo.toml` (so a renamed dependency, `msg = { package = "messenger" }`, works too).
pub fn default_path() -> Path {
    let find = |name: &str| Some(itself_by_name(crate_name(name).ok()?, name));
    choose(find(FACADE), find(MESSENGER))
}

/// "Itself" is also what `proc-macro-crate` says for the crate's own examples, tests and
/// doctests, which are other crates where `crate::Event` does not exist. Both `messenger` and
/// `multiprocess` declare `extern crate self as <name>;`, so `::<name>` works everywhere.
fn itself_by_name(found: FoundCrate, name: &str) -> FoundCrate {
    match found {
        FoundCrate::Itself => FoundCrate::Name(name.to_string()),
        found => found,
    }
}

/// `multiprocess` if the crate depends on it, else `messenger`; `crate` when the crate being
/// compiled is that crate itself. When neither is found (no manifest, or an unusual build) the
/// fallback is `::messenger`, which gives a plain "unresolved import" error if it is wrong too;
/// `#[event(crate = "...")]` is the way out then.
fn choose(facade: Option<FoundCrate>, messenger: Option<FoundCrate>) -> Path {
    match facade.or(messenger) {
        Some(FoundCrate::Itself) => syn::parse_quote!(crate),
        Some(FoundCrate::Name(name)) => {
            let ident = syn::Ident::new(&name, proc_macro2::Span::call_site());
            syn::parse_quote!(::#ident)
        }
        None => syn::parse_quote!(::messenger),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;

    fn path(facade: Option<FoundCrate>, messenger: Option<FoundCrate>) -> String {
        choose(facade, messenger)
            .to_token_stream()
            .to_string()
            .replace(' ', "")
    }

    fn name(name: &str) -> Option<FoundCrate> {
        Some(FoundCrate::Name(name.to_string()))
    }

    #[test]
    fn facade_wins_over_messenger() {
        assert_eq!(
            path(name("multiprocess"), name("messenger")),
            "::multiprocess"
        );
    }

    #[test]
    fn messenger_when_no_facade() {
        assert_eq!(path(None, name("messenger")), "::messenger");
        assert_eq!(path(None, name("msg")), "::msg");
    }

    #[test]
    fn itself_is_crate() {
        assert_eq!(path(Some(FoundCrate::Itself), None), "crate");
        assert_eq!(path(None, Some(FoundCrate::Itself)), "crate");
    }

    #[test]
    fn itself_is_named_by_the_crate_name() {
        let found = itself_by_name(FoundCrate::Itself, "messenger");
        assert_eq!(found, FoundCrate::Name("messenger".to_string()));
    }

    #[test]
    fn fallback_is_messenger() {
        assert_eq!(path(None, None), "::messenger");
    }
}
