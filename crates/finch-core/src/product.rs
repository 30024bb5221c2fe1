/// A Finch data product: one `/employer/*` endpoint, one permission a
/// connection may hold, and the unit of Finch's application rate limits.
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

    /// The permission (product scope) a connection needs for it, as a
    /// connection's `products` list names it. Webhook events about its items
    /// are named after it too (`pay_statement.created`).
    pub fn permission(self) -> &'static str {
        match self {
            Product::PayStatement => "pay_statement",
            other => other.as_str(),
        }
    }

    /// The product a permission names; `None` for permissions that are not
    /// data products (`ssn`, `benefits`, ...).
    pub fn from_permission(permission: &str) -> Option<Product> {
        Product::ALL
            .into_iter()
            .find(|product| product.permission() == permission)
    }

    /// The endpoint that serves it.
    pub fn path(self) -> &'static str {
        match self {
            Product::Company => "/employer/company",
            Product::Directory => "/employer/directory",
            Product::Individual => "/employer/individual",
            Product::Employment => "/employer/employment",
            Product::Payment => "/employer/payment",
            Product::PayStatement => "/employer/pay-statement",
        }
    }

    /// Requests per minute Finch allows one application (all its tokens
    /// together), as its rate-limit table publishes them.
    pub fn rate_limit_per_minute(self) -> u32 {
        match self {
            Product::Company | Product::Directory | Product::Individual | Product::Employment => 20,
            Product::Payment | Product::PayStatement => 12,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_product_is_found_by_its_own_permission_only() {
        for product in Product::ALL {
            assert_eq!(
                Product::from_permission(product.permission()),
                Some(product)
            );
            assert!(product.path().ends_with(product.as_str()), "{product:?}");
        }
        assert_eq!(Product::from_permission("pay-statement"), None);
        assert_eq!(Product::from_permission("ssn"), None);
    }
}
