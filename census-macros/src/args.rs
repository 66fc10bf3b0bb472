//! The attribute's arguments.
//!
//! They are split into `key`, `key = value` and `key(...)` entries first and checked one entry at
//! a time afterwards, so that one bad entry does not hide the next: every mistake gets its own
//! error, pointing at its own token.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::{Ident, LitStr, Path, Token};

use crate::errors::Errors;

/// Which attribute is being read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Flavor {
    Inproc,
    Dependency,
}

impl Flavor {
    /// The attribute a method inside an impl block may carry, by the last segment of its path.
    pub(crate) fn of(path: &Path) -> Option<Flavor> {
        let last = path.segments.last()?;
        if !last.arguments.is_empty() {
            return None;
        }
        if last.ident == "inproc" {
            Some(Flavor::Inproc)
        } else if last.ident == "dependency" {
            Some(Flavor::Dependency)
        } else {
            None
        }
    }

    /// How the attribute is written, for messages.
    pub(crate) fn attr(self) -> &'static str {
        match self {
            Flavor::Inproc => "#[inproc]",
            Flavor::Dependency => "#[dependency]",
        }
    }

    /// The attribute written with arguments, for messages: `#[inproc(skip)]`.
    pub(crate) fn with(self, args: &str) -> String {
        let name = match self {
            Flavor::Inproc => "inproc",
            Flavor::Dependency => "dependency",
        };
        format!("#[{name}({args})]")
    }

    fn keys(self) -> &'static str {
        match self {
            Flavor::Inproc => "`name`, `fields(...)`, `exception`, `crate` or `skip`",
            Flavor::Dependency => {
                "`kind`, `target`, `name`, `data`, `fields(...)`, `exception`, `crate` or `skip`"
            }
        }
    }
}

/// The arguments of one `#[inproc(...)]` or `#[dependency(...)]`.
pub(crate) struct Args {
    pub(crate) flavor: Flavor,
    /// Every key given, as written: messages about a key point at it.
    keys: Vec<Ident>,
    pub(crate) skip: Option<Ident>,
    pub(crate) name: Option<LitStr>,
    pub(crate) kind: Option<LitStr>,
    pub(crate) target: Option<LitStr>,
    pub(crate) data: Option<LitStr>,
    pub(crate) fields: Option<Vec<Ident>>,
    /// `exception`: an `Err` is sent as an Exception item too.
    pub(crate) exception: Option<Ident>,
    pub(crate) krate: Option<Path>,
}

/// One entry, before its value is checked.
enum Value {
    /// `key`
    Flag,
    /// `key = tokens`
    Assign(Token![=], TokenStream),
    /// `key(tokens)`
    List(Group),
}

impl Args {
    /// Reads the tokens between the attribute's parentheses. Mistakes go to `errors`; what could
    /// be read is kept.
    pub(crate) fn parse(flavor: Flavor, tokens: TokenStream, errors: &mut Errors) -> Args {
        let mut args = Args {
            flavor,
            keys: Vec::new(),
            skip: None,
            name: None,
            kind: None,
            target: None,
            data: None,
            fields: None,
            exception: None,
            krate: None,
        };
        for entry in split_entries(tokens) {
            args.entry(entry, errors);
        }
        if args.skip.is_some() {
            for key in args.keys.iter().filter(|key| *key != "skip") {
                errors.at(
                    key,
                    format!(
                        "`skip` leaves this method uninstrumented, so `{key}` has no effect: \
                         give `skip` alone, as in `{}`",
                        flavor.with("skip")
                    ),
                );
            }
        }
        args
    }

    /// The key as written, when it was given.
    pub(crate) fn key(&self, name: &str) -> Option<&Ident> {
        self.keys.iter().find(|key| *key == name)
    }

    fn entry(&mut self, entry: Vec<TokenTree>, errors: &mut Errors) {
        let mut tokens = entry.into_iter();
        let key = match tokens.next() {
            Some(TokenTree::Ident(ident)) => ident,
            Some(other) => {
                let rest: TokenStream = std::iter::once(other).chain(tokens).collect();
                errors.at(
                    rest,
                    format!(
                        "expected an option such as `name = \"...\"`; {} takes {}",
                        self.flavor.attr(),
                        self.flavor.keys()
                    ),
                );
                return;
            }
            None => return,
        };
        let rest: Vec<TokenTree> = tokens.collect();
        let value = match rest.as_slice() {
            [] => Value::Flag,
            [TokenTree::Group(group)] if group.delimiter() == Delimiter::Parenthesis => {
                Value::List(group.clone())
            }
            [TokenTree::Punct(eq), value @ ..] if eq.as_char() == '=' => {
                let eq = Token![=](eq.span());
                if value.is_empty() {
                    errors.at(eq, format!("`{key}` needs a value after `=`"));
                    return;
                }
                Value::Assign(eq, value.iter().cloned().collect())
            }
            _ => {
                errors.at(
                    rest.iter().cloned().collect::<TokenStream>(),
                    format!("expected `=` or `,` after `{key}`"),
                );
                return;
            }
        };

        let name = key.unraw().to_string();
        let known = matches!(
            name.as_str(),
            "skip" | "name" | "kind" | "target" | "data" | "fields" | "exception" | "crate"
        );
        if !known {
            errors.at(
                &key,
                format!(
                    "unknown option `{key}`; {} takes {}",
                    self.flavor.attr(),
                    self.flavor.keys()
                ),
            );
            return;
        }
        if self.keys.iter().any(|seen| *seen == name) {
            errors.at(&key, format!("`{key}` is given twice"));
            return;
        }
        self.keys.push(key.clone());

        if self.flavor == Flavor::Inproc {
            let why = match name.as_str() {
                "kind" => Some(
                    "#[inproc] has no `kind`: an in-process span is always of type INPROC; \
                     for a call to another system use #[dependency(kind = \"...\")]",
                ),
                "target" => Some(
                    "#[inproc] has no `target`: an in-process span calls no other system; \
                     for a remote call use #[dependency(kind = \"...\", target = \"...\")]",
                ),
                "data" => Some(
                    "#[inproc] has no `data`: command text belongs to a dependency; \
                     use #[dependency(kind = \"...\", data = \"...\")]",
                ),
                _ => None,
            };
            if let Some(why) = why {
                errors.at(&key, why);
                return;
            }
        }

        match name.as_str() {
            "skip" => match value {
                Value::Flag => self.skip = Some(key),
                Value::Assign(eq, tokens) => {
                    errors.at(quote::quote!(#eq #tokens), "`skip` takes no value")
                }
                Value::List(group) => errors.at(group, "`skip` takes no value"),
            },
            "exception" => {
                let usage = format!(
                    "`exception` takes no value: write it alone, as in `{}`, to send an `Err` \
                     as an Exception item too",
                    self.flavor.with(match self.flavor {
                        Flavor::Inproc => "exception",
                        Flavor::Dependency => "kind = \"SQL\", exception",
                    })
                );
                match value {
                    Value::Flag => self.exception = Some(key),
                    Value::Assign(eq, tokens) => errors.at(quote::quote!(#eq #tokens), usage),
                    Value::List(group) => errors.at(group, usage),
                }
            }
            "name" => self.name = string(&key, value, "load order", errors),
            "kind" => self.kind = string(&key, value, "SQL", errors),
            "target" => self.target = string(&key, value, "orders-db", errors),
            "data" => self.data = string(&key, value, "SELECT ...", errors),
            "crate" => self.krate = path(&key, value, errors),
            "fields" => self.fields = fields(&key, value, errors),
            _ => unreachable!("checked above"),
        }
    }
}

/// Splits the tokens at the top-level commas.
fn split_entries(tokens: TokenStream) -> Vec<Vec<TokenTree>> {
    let mut entries = vec![Vec::new()];
    for token in tokens {
        match &token {
            TokenTree::Punct(punct) if punct.as_char() == ',' => entries.push(Vec::new()),
            _ => entries.last_mut().expect("never empty").push(token),
        }
    }
    entries.retain(|entry| !entry.is_empty());
    entries
}

/// `key = "non-empty string"`.
fn string(key: &Ident, value: Value, example: &str, errors: &mut Errors) -> Option<LitStr> {
    let usage = format!("`{key}` takes a string literal, as in `{key} = \"{example}\"`");
    let tokens = match value {
        Value::Assign(_, tokens) => tokens,
        Value::Flag => {
            errors.at(key, usage);
            return None;
        }
        Value::List(group) => {
            errors.at(group, usage);
            return None;
        }
    };
    match syn::parse2::<LitStr>(tokens.clone()) {
        Ok(lit) if lit.value().trim().is_empty() => {
            errors.at(&lit, format!("`{key}` can't be empty"));
            None
        }
        Ok(lit) => Some(lit),
        Err(_) => {
            errors.at(tokens, usage);
            None
        }
    }
}

/// `crate = some::path`.
fn path(key: &Ident, value: Value, errors: &mut Errors) -> Option<Path> {
    let usage = "`crate` takes the path census_runtime is reachable at, as in `crate = telemetry`";
    let tokens = match value {
        Value::Assign(_, tokens) => tokens,
        Value::Flag => {
            errors.at(key, usage);
            return None;
        }
        Value::List(group) => {
            errors.at(group, usage);
            return None;
        }
    };
    match Path::parse_mod_style.parse2(tokens.clone()) {
        Ok(path) => Some(path),
        Err(_) => {
            errors.at(tokens, usage);
            None
        }
    }
}

/// `fields(a, b)`: distinct identifiers, at least one.
fn fields(key: &Ident, value: Value, errors: &mut Errors) -> Option<Vec<Ident>> {
    let usage = "`fields` lists the arguments to record in parentheses, as in `fields(id, user)`";
    let group = match value {
        Value::List(group) => group,
        Value::Flag => {
            errors.at(key, usage);
            return None;
        }
        Value::Assign(eq, tokens) => {
            errors.at(quote::quote!(#eq #tokens), usage);
            return None;
        }
    };
    let mut names: Vec<Ident> = Vec::new();
    let mut ok = true;
    for entry in split_entries(group.stream()) {
        match entry.as_slice() {
            [TokenTree::Ident(ident)] if ident.unraw() != "self" => {
                if names.iter().any(|seen| seen == ident) {
                    errors.at(ident, format!("`{ident}` is listed twice in `fields`"));
                    ok = false;
                } else {
                    names.push(ident.clone());
                }
            }
            [TokenTree::Ident(ident)] => {
                errors.at(
                    ident,
                    "`self` can't be a field: `fields` records arguments by `Display`; \
                     record a value of `self` at run time with \
                     `census_runtime::current_span().set_property(...)`",
                );
                ok = false;
            }
            other => {
                errors.at(
                    other.iter().cloned().collect::<TokenStream>(),
                    "expected the name of an argument of the function",
                );
                ok = false;
            }
        }
    }
    // Commas alone (`fields(,)`) name nothing either.
    let empty = names.is_empty() && ok;
    if empty {
        errors.at(
            group.to_token_stream(),
            "`fields()` names no argument: list the arguments to record, as in `fields(id)`, \
             or leave `fields` out",
        );
    }
    (ok && !empty).then_some(names)
}

/// The arguments of a method's own attribute inside an annotated impl block.
pub(crate) fn parse_inner(
    flavor: Flavor,
    attr: &syn::Attribute,
    errors: &mut Errors,
) -> Option<Args> {
    match &attr.meta {
        syn::Meta::Path(_) => Some(Args::parse(flavor, TokenStream::new(), errors)),
        syn::Meta::List(list) => Some(Args::parse(flavor, list.tokens.clone(), errors)),
        syn::Meta::NameValue(nv) => {
            errors.at(
                nv,
                format!("expected `{}` or `{}`", flavor.attr(), flavor.with("...")),
            );
            None
        }
    }
}

/// A string literal made by the macro (a default span name).
pub(crate) fn lit(value: &str) -> LitStr {
    LitStr::new(value, Span::call_site())
}
