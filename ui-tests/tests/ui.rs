//! `tests/ui/pass/*.rs` must compile and run; `tests/ui/fail/*.rs` must fail to compile with the
//! error pinned in the `.stderr` beside each (regenerate with `TRYBUILD=overwrite`, then read it).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
