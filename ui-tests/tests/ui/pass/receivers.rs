// Methods annotated one by one, with every receiver form; each knows only its fn name.
use census_runtime::inproc;
use census_ui_tests::Capture;
use std::pin::Pin;

struct Cart {
    items: Vec<String>,
}

impl Cart {
    #[inproc]
    fn new() -> Self {
        Cart { items: Vec::new() }
    }

    #[inproc]
    fn first(&self) -> Option<&String> {
        self.items.first()
    }

    #[inproc]
    fn items_mut(&mut self) -> &mut Vec<String> {
        // A borrow of `self` returned from the instrumented body.
        &mut self.items
    }

    #[inproc]
    fn into_items(self) -> Vec<String> {
        self.items
    }

    #[inproc]
    fn boxed(self: Box<Self>) -> usize {
        self.items.len()
    }

    #[inproc]
    fn pinned(self: Pin<&mut Self>) -> &mut Vec<String> {
        &mut self.get_mut().items
    }

    #[inproc]
    fn with_mut_self(mut self, item: &str) -> Self {
        self.items.push(item.to_owned());
        self
    }
}

trait Describe {
    fn describe(&self) -> String;
    #[inproc]
    fn shout(&self) -> String {
        self.describe().to_uppercase()
    }
}

impl Describe for Cart {
    #[inproc]
    fn describe(&self) -> String {
        self.items.join(",")
    }
}

fn main() {
    let capture = Capture::install();
    let mut cart = Cart::new();
    cart.items_mut().push("tea".to_owned());
    assert_eq!(cart.first().map(String::as_str), Some("tea"));
    Pin::new(&mut cart).pinned().push("milk".to_owned());
    let cart = cart.with_mut_self("sugar");
    assert_eq!(cart.shout(), "TEA,MILK,SUGAR");
    assert_eq!(Box::new(Cart::new()).boxed(), 0);
    assert_eq!(cart.into_items().len(), 3);

    for name in [
        "first",
        "items_mut",
        "into_items",
        "boxed",
        "pinned",
        "with_mut_self",
    ] {
        capture.one(name);
    }
    assert_eq!(
        capture.spans().iter().filter(|s| s.name() == "new").count(),
        2
    );
    let shout = capture.one("shout");
    assert_eq!(capture.one("describe").parent_id(), Some(shout.span_id()));
}
