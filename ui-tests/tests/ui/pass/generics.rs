// Generic functions with lifetimes, bounds and `where` clauses; a generic impl block.
use census_runtime::{dependency, inproc};
use census_ui_tests::Capture;
use std::borrow::Cow;
use std::fmt::Display;

#[inproc(fields(separator))]
fn join<'a, 'b: 'a, T, I>(items: I, separator: &'b str) -> Cow<'a, str>
where
    I: IntoIterator<Item = &'a T>,
    T: AsRef<str> + ?Sized + 'a,
{
    let parts: Vec<&str> = items.into_iter().map(AsRef::as_ref).collect();
    match parts.as_slice() {
        [one] => Cow::Borrowed(one),
        _ => Cow::Owned(parts.join(separator)),
    }
}

#[inproc]
fn longest<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.len() >= b.len() { a } else { b }
}

#[inproc]
fn first_mut<T>(items: &mut [T]) -> Option<&mut T> {
    items.first_mut()
}

#[dependency(kind = "SQL", fields(key, value))]
fn store<K: Display, V>(key: K, value: V) -> Result<(K, V), String>
where
    V: Display + Clone,
{
    if key.to_string().is_empty() {
        return Err("empty key".into());
    }
    Ok((key, value))
}

#[inproc]
fn with_const<const N: usize>(values: [u8; N]) -> usize {
    values.len() * N
}

struct Wrapper<'a, T>(&'a mut Vec<T>);

#[inproc]
impl<'a, T> Wrapper<'a, T>
where
    T: Clone + PartialEq,
{
    fn push_unique(&mut self, value: T) -> &mut Self {
        if !self.0.contains(&value) {
            self.0.push(value);
        }
        self
    }

    fn last(&self) -> Option<&T> {
        self.0.last()
    }
}

fn main() {
    let capture = Capture::install();
    assert_eq!(join(["a", "b"].iter().copied(), "-"), "a-b");
    assert_eq!(join(vec![&"x".to_owned()], ","), "x");
    assert_eq!(longest("ab", "c"), "ab");
    let mut values = [1, 2];
    *first_mut(&mut values).unwrap() = 7;
    assert_eq!(values, [7, 2]);
    assert_eq!(store("k", 5), Ok(("k", 5)));
    assert!(store("", 5).is_err());
    assert_eq!(with_const([1, 2, 3]), 9);
    let mut vec = Vec::new();
    let mut wrapper = Wrapper(&mut vec);
    wrapper.push_unique(1).push_unique(1);
    assert_eq!(wrapper.last(), Some(&1));

    let joins = capture
        .spans()
        .into_iter()
        .filter(|s| s.name() == "join")
        .collect::<Vec<_>>();
    assert_eq!(joins[0].property("separator"), Some("-"));
    let stores: Vec<_> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name() == "store")
        .collect();
    assert_eq!(stores[0].property("key"), Some("k"));
    assert_eq!(stores[0].property("value"), Some("5"));
    assert_eq!(stores[1].error_message(), Some("empty key"));
    assert_eq!(
        capture
            .spans()
            .iter()
            .filter(|s| s.name() == "Wrapper::push_unique")
            .count(),
        2
    );
    capture.one("with_const");
}
