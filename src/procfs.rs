//! Small parsers over /proc and /sys files (see collect/).
