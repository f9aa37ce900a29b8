//! SQLite session store.
