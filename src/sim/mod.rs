//! A Graph API simulator that speaks like Meta.
