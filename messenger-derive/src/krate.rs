//! Where the messenger crate is, from the user's crate: the generated code names
//! `<krate>::Event`, `<krate>::Dispatch`, `<krate>::BoxFuture` and `<krate>::async_trait`.

use proc_macro_crate::{crate_name, FoundCrate};
use syn::Path;

/// The facade that re-exports everything of the messenger: preferred, since it is the crate
/// users depend on, and a user of the facade may not depend on the messenger directly.
const FACADE: &str = "multiprocess";
/// The messenger's package, and the name of its library (what `multiprocess-messenger = "..."`
/// in a `Cargo.toml` brings into scope, and what the package calls itself).
const MESSENGER: &str = "multiprocess-messenger";
const MESSENGER_LIB: &str = "messenger";

/// The path of the messenger crate as seen from the crate being compiled, found in its
/// `Cargo.toml` (so a renamed dependency, `msg = { package = "multiprocess-messenger" }`, works
/// too).
pub fn default_path() -> Path {
    let facade = crate_name(FACADE)
        .ok()
        .map(|found| extern_name(found, FACADE));
    let messenger = crate_name(MESSENGER)
        .ok()
        .map(|found| extern_name(found, MESSENGER_LIB));
    choose(facade, messenger)
}

/// The name the crate being compiled reaches the package by. `proc-macro-crate` answers with
/// the dependency's key in `Cargo.toml`, which is the name in scope when the dependency is
/// renamed (`messenger = { package = "multiprocess-messenger" }` gives `messenger`). When it is
/// not renamed, the key is the package's name, while the name in scope is the library's: the
/// two differ for `multiprocess-messenger`, whose library is `messenger`.
///
/// "Itself" is also what `proc-macro-crate` says for the package's own examples, tests and
/// doctests, which are other crates where `crate::Event` does not exist: they reach the library
/// by its name, and both libraries declare `extern crate self as <name>;` so that `::<name>`
/// works inside them too.
fn extern_name(found: FoundCrate, lib: &str) -> String {
    match found {
        FoundCrate::Itself => lib.to_string(),
        FoundCrate::Name(key) if key == MESSENGER.replace('-', "_") => lib.to_string(),
        FoundCrate::Name(key) => key,
    }
}

/// `multiprocess` if the crate depends on it (or is it), else the messenger. When neither is
/// found (no manifest, or an unusual build) the fallback is `::multiprocess`, the crate users
/// depend on, which gives a plain "unresolved import" error if it is wrong;
/// `#[event(crate = "...")]` is the way out then.
fn choose(facade: Option<String>, messenger: Option<String>) -> Path {
    let name = facade.or(messenger);
    let name = name.as_deref().unwrap_or(FACADE);
    let ident = syn::Ident::new(name, proc_macro2::Span::call_site());
    syn::parse_quote!(::#ident)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;

    fn path(facade: Option<FoundCrate>, messenger: Option<FoundCrate>) -> String {
        choose(
            facade.map(|found| extern_name(found, FACADE)),
            messenger.map(|found| extern_name(found, MESSENGER_LIB)),
        )
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
        assert_eq!(path(name("mp"), name("messenger")), "::mp");
    }

    #[test]
    fn messenger_when_no_facade() {
        // `multiprocess-messenger = "0.1"`: the library's name.
        assert_eq!(path(None, name("multiprocess_messenger")), "::messenger");
        // Renamed: the name the user chose (the workspace's own `messenger = { package = ... }`).
        assert_eq!(path(None, name("messenger")), "::messenger");
        assert_eq!(path(None, name("msg")), "::msg");
    }

    #[test]
    fn itself_is_named_by_the_library_name() {
        assert_eq!(path(Some(FoundCrate::Itself), None), "::multiprocess");
        assert_eq!(path(None, Some(FoundCrate::Itself)), "::messenger");
        assert_eq!(
            path(Some(FoundCrate::Itself), Some(FoundCrate::Itself)),
            "::multiprocess"
        );
    }

    #[test]
    fn fallback_is_the_facade() {
        assert_eq!(path(None, None), "::multiprocess");
    }
}
