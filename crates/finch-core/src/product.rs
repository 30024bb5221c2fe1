/// A Finch data endpoint: the unit of Finch's application rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Product {
    Company,
    Directory,
    Individual,
    Employment,
    Payment,
    PayStatement,
}

impl Product {
    pub const ALL: [Product; 6] = [
        Product::Company,
        Product::Directory,
        Product::Individual,
        Product::Employment,
        Product::Payment,
        Product::PayStatement,
    ];

    /// The name Finch's rate-limit table uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Company => "company",
            Product::Directory => "directory",
            Product::Individual => "individual",
            Product::Employment => "employment",
            Product::Payment => "payment",
            Product::PayStatement => "pay-statement",
        }
    }

    /// The permission (product scope) a connection needs for it.
    pub fn permission(self) -> &'static str {
        match self {
            Product::PayStatement => "pay_statement",
            other => other.as_str(),
        }
    }
}
