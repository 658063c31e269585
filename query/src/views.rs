//! Documented SQL views over the base tables (owner: SQL + pgwire work). Placeholder.

use datafusion::prelude::SessionContext;

use crate::Result;

/// Registers the views in a query session.
pub fn register(_ctx: &SessionContext) -> Result<()> {
    Ok(())
}
