//! A local stand-in for the Finch API and its webhook delivery.
