//! Rewriting one function (sync, async, or the `async-trait` shape) and whole impl blocks.
//!
//! The signature, attributes and visibility are left as written; only the body changes. The code
//! added per function is small on purpose: a `static` call-site descriptor, its registration, and
//! calls into `census_runtime::__private`, where the logic lives.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::visit_mut::{self, VisitMut};
use syn::{
    Attribute, Block, Expr, ExprAsync, FnArg, Ident, ImplItem, Item, ItemFn, ItemImpl, LitStr, Pat,
    Path, ReturnType, Signature, Stmt, Token, Type, Visibility,
};

use crate::args::{Args, Flavor, lit, parse_inner};
use crate::errors::Errors;

/// Expands `#[inproc(args)]` or `#[dependency(args)]` on `item`.
///
/// With any mistake, the item comes back as written (the census attributes of its methods
/// neutralized) next to one `compile_error!` per mistake, so the rest of the crate still type-checks
/// and only the real mistakes are reported.
pub(crate) fn attribute(flavor: Flavor, args: TokenStream, item: TokenStream) -> TokenStream {
    if is_handled(&args) {
        return item;
    }
    let mut errors = Errors::default();
    let args = Args::parse(flavor, args, &mut errors);
    let (expanded, fallback) = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => expand_fn(&args, function, &mut errors),
        Ok(Item::Impl(block)) => expand_impl(&args, block, &mut errors),
        Ok(other) => {
            unsupported(flavor, &other, &mut errors);
            (TokenStream::new(), item)
        }
        Err(error) => {
            errors.push(error);
            (TokenStream::new(), item)
        }
    };
    if errors.is_empty() {
        expanded
    } else {
        quote!(#fallback #errors)
    }
}

/// What a block's expansion leaves in place of a method's own attribute: the attribute's path
/// stays, so that its `use` is not reported unused, and the attribute then expands to nothing.
const HANDLED: &str = "__census_handled";

fn is_handled(args: &TokenStream) -> bool {
    let mut tokens = args.clone().into_iter();
    matches!(
        (tokens.next(), tokens.next()),
        (Some(proc_macro2::TokenTree::Ident(ident)), None) if ident == HANDLED
    )
}

/// What one instrumented function's site says.
struct Spec {
    krate: TokenStream,
    name: LitStr,
    /// `None`: in-process.
    kind: Option<LitStr>,
    target: Option<LitStr>,
    data: Option<LitStr>,
    fields: Vec<Ident>,
    /// An `Err` is sent as an Exception item too.
    exception: bool,
}

fn krate(path: Option<&Path>) -> TokenStream {
    match path {
        Some(path) => path.to_token_stream(),
        None => quote!(::census_runtime),
    }
}

fn missing_kind(errors: &mut Errors, at: Option<&Attribute>) {
    let message = "#[dependency] needs a `kind`, the dependency type Application Insights shows, \
                   as in #[dependency(kind = \"SQL\", target = \"orders-db\")]; \
                   for in-process work use #[inproc]";
    match at {
        Some(attr) => errors.at(attr, message),
        None => errors.push(syn::Error::new(Span::call_site(), message)),
    }
}

// ---------------------------------------------------------------------------------------------
// Free functions and individually annotated methods.

fn expand_fn(args: &Args, mut function: ItemFn, errors: &mut Errors) -> (TokenStream, TokenStream) {
    let fallback = function.to_token_stream();
    if let Some(skip) = &args.skip {
        errors.at(
            skip,
            format!(
                "`skip` opts a method out of an impl block annotated with {}; \
                 to leave this function uninstrumented, remove the attribute",
                args.flavor.attr()
            ),
        );
        return (fallback.clone(), fallback);
    }
    if args.flavor == Flavor::Dependency && args.key("kind").is_none() {
        missing_kind(errors, None);
    }
    let spec = Spec {
        krate: krate(args.krate.as_ref()),
        name: args
            .name
            .clone()
            .unwrap_or_else(|| lit(&function.sig.ident.unraw().to_string())),
        kind: args.kind.clone(),
        target: args.target.clone(),
        data: args.data.clone(),
        fields: args.fields.clone().unwrap_or_default(),
        exception: args.exception.is_some(),
    };
    instrument(&function.sig, &mut function.block, &spec, errors);
    (function.into_token_stream(), fallback)
}

/// Rewrites `block`, the body of the function `sig`.
fn instrument(sig: &Signature, block: &mut Block, spec: &Spec, errors: &mut Errors) {
    if let Some(constness) = &sig.constness {
        errors.at(
            constness,
            "a `const fn` can't be instrumented: a span is run-time work and a `const fn` may run \
             at compile time; remove the attribute (inside an annotated impl block, `const fn` \
             methods are left alone)",
        );
        return;
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && let Type::Never(never) = &**ty
    {
        errors.at(
            never,
            "a function returning `!` never returns, so its span would never end; \
             instrument the functions it calls instead",
        );
        return;
    }
    check_fields(sig, &spec.fields, errors);

    let site = site(sig, spec);
    if sig.asyncness.is_some() {
        let body = &block.stmts;
        let tokens = async_body(spec, site, Some(&sig.output), quote!(#(#body)*));
        replace(block, tokens);
    } else if let Some(future) = boxed_future(block) {
        // The shape `async-trait` expands an `async fn` to: instrument the future it boxes, whose
        // output type `async-trait` already pins down.
        let body = &future.block.stmts;
        let tokens = async_body(spec, site, None, quote!(#(#body)*));
        replace(&mut future.block, tokens);
    } else {
        let body = &block.stmts;
        let tokens = sync_body(spec, site, &sig.output, quote!(#(#body)*));
        replace(block, tokens);
    }
}

/// Replaces a block's statements with tokens, without parsing them again.
fn replace(block: &mut Block, tokens: TokenStream) {
    block.stmts = vec![Stmt::Expr(Expr::Verbatim(tokens), None)];
}

/// The `static` site, registered (`__site!` puts it where `sites()` finds it).
fn site(sig: &Signature, spec: &Spec) -> TokenStream {
    let p = &spec.krate;
    let name = &spec.name;
    let constructor = match &spec.kind {
        Some(kind) => quote!(dependency(#name, #kind)),
        None => quote!(inproc(#name)),
    };
    let target = spec.target.as_ref().map(|t| quote!(.with_target(#t)));
    let data = spec.data.as_ref().map(|d| quote!(.with_data(#d)));
    let exception = spec.exception.then(|| quote!(.with_exception()));
    let fields = (!spec.fields.is_empty()).then(|| {
        let names = spec.fields.iter().map(|f| f.unraw().to_string());
        quote!(.with_fields(&[#(#names),*]))
    });
    // Spanned at the function's name, `line!()` gives the function's line.
    let line = quote_spanned!(sig.ident.span()=> ::core::line!());
    // The module's path and the file's in one string, the same for every site of the module:
    // one pointer in the site rather than two.
    quote! {
        #p::__site!(__CENSUS_SITE = #p::__private::Site::#constructor
            #target #data #fields #exception
            .at_joined(
                ::core::concat!(::core::module_path!(), ::core::file!()),
                ::core::module_path!().len(),
                #line,
            ));
    }
}

/// Records the `fields(...)` arguments on the span held by `span`, with the runtime function
/// `record` (which does nothing unless the span records).
fn record_fields(spec: &Spec, span: TokenStream, record: &str) -> Option<TokenStream> {
    if spec.fields.is_empty() {
        return None;
    }
    let p = &spec.krate;
    let record = Ident::new(record, Span::call_site());
    // Spanned at the field's name: an argument that is not `Display` is reported there.
    let values = spec.fields.iter().map(|f| quote_spanned!(f.span()=> &#f));
    Some(quote! {
        #p::__private::#record(#span, &[#(#values),*]);
    })
}

/// Whether the function declares a return value whose outcome is worth looking at. A function
/// with no return type can't return `Err`; skipping the check also keeps a body that only panics
/// from leaving the probe an uninferred type to guess at.
fn returns_value(output: &ReturnType) -> bool {
    matches!(output, ReturnType::Type(..))
}

fn sync_body(
    spec: &Spec,
    site: TokenStream,
    output: &ReturnType,
    body: TokenStream,
) -> TokenStream {
    let p = &spec.krate;
    let fake = fake_return(output);
    let probe = returns_value(output);
    let call = Ident::new("__census_call", Span::mixed_site());
    let ret = Ident::new("__census_ret", Span::mixed_site());
    let record = record_fields(spec, quote!(&#call), "record_fields");
    // The call has no drop glue: it ends here, judged by the returned value, or in `run` when
    // the body panics.
    let end = if probe {
        quote! {
            {
                use #p::__private::{ErrorOutcome as _, PlainOutcome as _, ResultOutcome as _};
                (&&&#p::__private::Probe(&#ret)).census_end(#call);
            }
        }
    } else {
        quote!(#p::__private::end(#call);)
    };
    quote! {
        #site
        let #call = #p::__private::enter(&__CENSUS_SITE);
        #record
        #[allow(clippy::let_unit_value)]
        let #ret = #p::__private::run(#call, move || { #fake #body });
        #end
        #ret
    }
}

/// `output`: the function's return type, or `None` where the future's output is already typed
/// (the `async-trait` shape).
fn async_body(
    spec: &Spec,
    site: TokenStream,
    output: Option<&ReturnType>,
    body: TokenStream,
) -> TokenStream {
    let p = &spec.krate;
    let fake = output.and_then(fake_return);
    let probe = output.is_none_or(returns_value);
    let span = Ident::new("__census_span", Span::mixed_site());
    let out = Ident::new("__census_out", Span::mixed_site());
    let outcome = Ident::new("__census_outcome", Span::mixed_site());
    let start = quote!(#p::__private::start_async(&__CENSUS_SITE));
    let (prelude, span_expr) = match record_fields(spec, quote!(&mut #span), "record_async_fields")
    {
        Some(record) => (
            quote!(let mut #span = #start; #record),
            span.to_token_stream(),
        ),
        None => (TokenStream::new(), start),
    };
    let check = if probe {
        quote! {
            |#out, #outcome| {
                use #p::__private::{ErrorOutcome as _, PlainOutcome as _, ResultOutcome as _};
                (&&&#p::__private::Probe(#out)).census_async(#outcome)
            }
        }
    } else {
        quote!(|_, _| {})
    };
    quote! {
        #site
        #prelude
        #p::__private::instrument(#span_expr, async move { #fake #body }, #check, || &__CENSUS_SITE).await
    }
}

/// An unreachable `return` of the declared type, so that `?` and `return` inside the wrapped body
/// infer the function's return type (as `tracing-attributes` does). `impl Trait` can't be named
/// in a `let`, so it becomes `_`.
fn fake_return(output: &ReturnType) -> Option<TokenStream> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let mut ty = (**ty).clone();
    ImplTraitToInfer.visit_type_mut(&mut ty);
    if matches!(ty, Type::Infer(_)) {
        return None;
    }
    let fake = Ident::new("__census_fake", Span::mixed_site());
    Some(quote! {
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::let_with_type_underscore,
            clippy::needless_return,
            clippy::unreachable
        )]
        if false {
            let #fake: #ty = loop {};
            return #fake;
        }
    })
}

struct ImplTraitToInfer;

impl VisitMut for ImplTraitToInfer {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(impl_trait) = ty {
            *ty = Type::Infer(syn::TypeInfer {
                attrs: Vec::new(),
                underscore_token: Token![_](impl_trait.impl_token.span),
            });
        } else {
            visit_mut::visit_type_mut(self, ty);
        }
    }
}

/// The future of a body shaped `Box::pin(async move { ... })`, the way `async-trait` writes an
/// `async fn` (as `tracing-attributes` finds it).
fn boxed_future(block: &mut Block) -> Option<&mut ExprAsync> {
    let Some(Stmt::Expr(Expr::Call(call), None)) = block.stmts.last_mut() else {
        return None;
    };
    let Expr::Path(func) = &*call.func else {
        return None;
    };
    let mut segments = func.path.segments.iter().rev();
    let is_box_pin = segments.next().is_some_and(|s| s.ident == "pin")
        && segments.next().is_some_and(|s| s.ident == "Box");
    if !is_box_pin || call.args.len() != 1 {
        return None;
    }
    match call.args.first_mut() {
        Some(Expr::Async(future)) => Some(future),
        _ => None,
    }
}

/// Every name in `fields(...)` must be an argument of the function.
fn check_fields(sig: &Signature, fields: &[Ident], errors: &mut Errors) {
    let arguments: Vec<&Ident> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) => Some(&pat.ident),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
        .collect();
    for field in fields {
        if arguments.contains(&field) {
            continue;
        }
        let known = if arguments.is_empty() {
            "it has no named argument".to_owned()
        } else {
            let names: Vec<String> = arguments.iter().map(|a| format!("`{a}`")).collect();
            format!("its arguments are {}", names.join(", "))
        };
        errors.at(
            field,
            format!(
                "`{field}` is not an argument of `{}`: `fields` records arguments by name, and {known}",
                sig.ident
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Impl blocks.

/// A method's own `#[inproc(...)]` or `#[dependency(...)]` inside an annotated block.
struct Own {
    attr: Attribute,
    args: Args,
}

fn expand_impl(
    args: &Args,
    mut block: ItemImpl,
    errors: &mut Errors,
) -> (TokenStream, TokenStream) {
    if let Some(skip) = &args.skip {
        errors.at(
            skip,
            format!(
                "`skip` opts one method out of an annotated impl block: put {} on that method",
                args.flavor.with("skip")
            ),
        );
    }
    if let Some(name) = args.key("name") {
        errors.at(
            name,
            format!(
                "`name` on an impl block would give every method the same name; methods are \
                 named `Type::method`, and one is renamed with {} on it",
                args.flavor.with("name = \"...\"")
            ),
        );
    }
    if let Some(fields) = args.key("fields") {
        errors.at(
            fields,
            format!(
                "`fields` names the arguments of one function: put {} on the method",
                args.flavor.with("fields(...)")
            ),
        );
    }
    if args.flavor == Flavor::Dependency && args.key("kind").is_none() {
        missing_kind(errors, None);
    }

    // Read the methods' own attributes first, so that neither output expands them again.
    let own: Vec<Option<Own>> = block
        .items
        .iter_mut()
        .map(|item| match item {
            ImplItem::Fn(method) => take_own(&mut method.attrs, errors),
            _ => None,
        })
        .collect();
    let fallback = block.to_token_stream();

    let type_name = self_name(&block.self_ty);
    for (item, own) in block.items.iter_mut().zip(own) {
        let ImplItem::Fn(method) = item else {
            continue;
        };
        if own.as_ref().is_some_and(|own| own.args.skip.is_some()) {
            continue;
        }
        // A `const fn` can't hold a span; the block's attribute passes over it.
        if method.sig.constness.is_some() && own.is_none() {
            continue;
        }
        let method_name = method.sig.ident.unraw();
        let name = match &type_name {
            Some(ty) => format!("{ty}::{method_name}"),
            None => method_name.to_string(),
        };
        if let Some(spec) = merge(args, own.as_ref(), name, errors) {
            instrument(&method.sig, &mut method.block, &spec, errors);
        }
    }
    (block.into_token_stream(), fallback)
}

/// Reads a method's census attribute (a second one is a mistake) and neutralizes it: it becomes
/// `#[path(__census_handled)]`, which expands to the method as it is.
fn take_own(attrs: &mut [Attribute], errors: &mut Errors) -> Option<Own> {
    let mut own: Option<Own> = None;
    for attr in attrs.iter_mut() {
        let Some(flavor) = Flavor::of(attr.path()) else {
            continue;
        };
        if own.is_some() {
            errors.at(
                &*attr,
                "a method takes one #[inproc] or #[dependency]: this one is the second",
            );
        } else if let Some(args) = parse_inner(flavor, attr, errors) {
            own = Some(Own {
                attr: attr.clone(),
                args,
            });
        }
        let path = attr.path().clone();
        let handled = Ident::new(HANDLED, Span::call_site());
        attr.meta = syn::parse_quote!(#path(#handled));
    }
    own
}

/// The spec of a method in an annotated block: its own keys override the block's; `kind`,
/// `target` and `data` come from the block unless the method gives them or is `#[inproc]`.
fn merge(block: &Args, own: Option<&Own>, name: String, errors: &mut Errors) -> Option<Spec> {
    let Some(Own { attr, args }) = own else {
        if block.flavor == Flavor::Dependency && block.kind.is_none() {
            return None; // reported once, for the block
        }
        return Some(Spec {
            krate: krate(block.krate.as_ref()),
            name: lit(&name),
            kind: block.kind.clone(),
            target: block.target.clone(),
            data: block.data.clone(),
            fields: Vec::new(),
            exception: block.exception.is_some(),
        });
    };
    let inherit = args.flavor == Flavor::Dependency && block.flavor == Flavor::Dependency;
    let kind = match args.flavor {
        Flavor::Inproc => None,
        Flavor::Dependency => {
            let kind = args
                .kind
                .clone()
                .or_else(|| inherit.then(|| block.kind.clone()).flatten());
            if kind.is_none() {
                if block.flavor == Flavor::Inproc && args.key("kind").is_none() {
                    missing_kind(errors, Some(attr));
                }
                return None;
            }
            kind
        }
    };
    let from_block = |own: &Option<LitStr>, block: &Option<LitStr>| {
        own.clone()
            .or_else(|| inherit.then(|| block.clone()).flatten())
    };
    Some(Spec {
        krate: krate(args.krate.as_ref().or(block.krate.as_ref())),
        name: args.name.clone().unwrap_or_else(|| lit(&name)),
        kind,
        target: from_block(&args.target, &block.target),
        data: from_block(&args.data, &block.data),
        fields: args.fields.clone().unwrap_or_default(),
        exception: args.exception.is_some() || block.exception.is_some(),
    })
}

/// `PgOrders` for `impl Repo for PgOrders<T>`, `&'a PgOrders` or `crate::db::PgOrders`.
fn self_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.unraw().to_string()),
        Type::Reference(reference) => self_name(&reference.elem),
        Type::Paren(paren) => self_name(&paren.elem),
        Type::Group(group) => self_name(&group.elem),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Everything else.

fn unsupported(flavor: Flavor, item: &Item, errors: &mut Errors) {
    let attr = flavor.attr();
    if let Item::Verbatim(tokens) = item
        && let Ok(semi) = bodiless_fn.parse2(tokens.clone())
    {
        errors.at(
            semi,
            format!(
                "this function has no body for {attr} to instrument (a trait method without a \
                 default body, or a foreign function): put {attr} on the functions that \
                 implement it, for example on the trait's impl blocks"
            ),
        );
        return;
    }
    let (what, head) = match item {
        Item::Trait(t) => {
            let (token, ident) = (&t.trait_token, &t.ident);
            errors.at(
                quote!(#token #ident),
                format!(
                    "{attr} can't go on a trait definition: put it on the trait's impl blocks \
                     (every method of the block is then instrumented), or on a default method \
                     that has a body"
                ),
            );
            return;
        }
        Item::Struct(s) => ("a struct", head(&s.struct_token, &s.ident)),
        Item::Enum(e) => ("an enum", head(&e.enum_token, &e.ident)),
        Item::Union(u) => ("a union", head(&u.union_token, &u.ident)),
        Item::Const(c) => ("a const", head(&c.const_token, &c.ident)),
        Item::Static(s) => ("a static", head(&s.static_token, &s.ident)),
        Item::Mod(m) => ("a module", head(&m.mod_token, &m.ident)),
        Item::Use(u) => ("a `use`", u.use_token.to_token_stream()),
        Item::Type(t) => ("a type alias", head(&t.type_token, &t.ident)),
        Item::TraitAlias(t) => ("a trait alias", head(&t.trait_token, &t.ident)),
        Item::ExternCrate(e) => ("an `extern crate`", head(&e.extern_token, &e.crate_token)),
        Item::ForeignMod(f) => ("an extern block", f.abi.to_token_stream()),
        Item::Macro(m) => ("a macro", m.mac.path.to_token_stream()),
        other => ("this item", other.to_token_stream()),
    };
    errors.at(
        head,
        format!(
            "{attr} can't go on {what}: it instruments a function, a method, or every method \
             of an impl block"
        ),
    );
}

fn head(keyword: &impl ToTokens, ident: &impl ToTokens) -> TokenStream {
    quote!(#keyword #ident)
}

/// `fn f(&self);`: a signature without a body, as trait declarations and foreign functions have.
fn bodiless_fn(input: ParseStream) -> syn::Result<Token![;]> {
    input.call(Attribute::parse_outer)?;
    input.parse::<Visibility>()?;
    input.parse::<Signature>()?;
    input.parse()
}
