//! statedir
