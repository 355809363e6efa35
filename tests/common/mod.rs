pub mod backend;
pub mod daemon;
pub mod rows;
