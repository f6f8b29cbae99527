//! OWNER: recipe helper.
