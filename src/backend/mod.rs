//! TODO(lead)
