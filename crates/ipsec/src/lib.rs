//! frag merged
pub mod crypto;
pub mod frag;
pub mod replay;
pub mod selector;
pub mod spd_index;
