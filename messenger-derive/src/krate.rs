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
    let in_doctest = std::env::var_os(RUSTDOC_TEST_ENV).is_some();
    let find = |name: &str| Some(itself_in_doctest(crate_name(name).ok()?, name, in_doctest));
    choose(find(FACADE), find(MESSENGER))
}

/// Set by rustdoc while it compiles a doctest (it names the tested file).
const RUSTDOC_TEST_ENV: &str = "UNSTABLE_RUSTDOC_TEST_PATH";

/// A doctest of `messenger` is compiled with `messenger`'s manifest, so `proc-macro-crate` says
/// "itself"; but the doctest is a separate crate that uses `messenger` as a dependency, where
/// `crate::Event` does not exist. There the crate's own name is right.
fn itself_in_doctest(found: FoundCrate, name: &str, in_doctest: bool) -> FoundCrate {
    match found {
        FoundCrate::Itself if in_doctest => FoundCrate::Name(name.to_string()),
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
    fn itself_is_the_crate_name_in_a_doctest() {
        let found = itself_in_doctest(FoundCrate::Itself, "messenger", true);
        assert_eq!(found, FoundCrate::Name("messenger".to_string()));
        let found = itself_in_doctest(FoundCrate::Itself, "messenger", false);
        assert_eq!(found, FoundCrate::Itself);
    }

    #[test]
    fn fallback_is_messenger() {
        assert_eq!(path(None, None), "::messenger");
    }
}
