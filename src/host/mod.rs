//! Host side: launch, list and stop aim-engine containers through the Docker Engine API.
//!
//! OWNER: host helper.
