//! Server-side apply and managedFields bookkeeping.
