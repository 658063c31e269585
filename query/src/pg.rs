//! Postgres wire protocol front end (owner: SQL + pgwire work). Placeholder.
