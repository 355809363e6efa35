pub mod backend;
pub mod rows;
