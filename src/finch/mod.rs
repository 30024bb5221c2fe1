//! Client for the Finch API.
