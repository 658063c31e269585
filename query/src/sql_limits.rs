//! How big and how deep one SQL statement may be, checked on the parsed statement before
//! anything is planned.
//!
//! The parser itself recurses only for nesting it counts (`datafusion.sql_parser.recursion_limit`:
//! parentheses, subqueries, unary operators), but it builds left-deep trees without
//! recursing: `1+1+…+1`, `a OR b OR …` and `SELECT … UNION ALL SELECT …` come out as trees
//! as deep as they are long. Planning, optimising, evaluating and even dropping those trees
//! recurse on them, so their depth is what must be bounded:
//!
//! | limit | counts |
//! | --- | --- |
//! | `query.max_expression_depth` | nesting of expressions and subqueries |
//! | `query.max_set_operation_branches` | `UNION` / `INTERSECT` / `EXCEPT` operations + 1 |
//! | `query.max_sql_nodes` | expressions, query blocks and table references |
//!
//! The check itself recurses only as deep as the limits allow: the visitor stops at the
//! first node over a limit. Queries run on threads with large stacks ([`crate::bulkhead`]),
//! so anything within the limits has a wide margin.

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, TableFactor, Visit, Visitor};

use crate::{Error, QueryConfig, Result};

/// Limits of one statement (from [`QueryConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    pub max_expression_depth: usize,
    pub max_set_operation_branches: usize,
    pub max_sql_nodes: usize,
}

impl SqlLimits {
    pub fn from_config(config: &QueryConfig) -> Self {
        Self {
            max_expression_depth: config.max_expression_depth,
            max_set_operation_branches: config.max_set_operation_branches,
            max_sql_nodes: config.max_sql_nodes,
        }
    }

    /// Fails with [`Error::BadRequest`] naming the limit when `statement` exceeds one.
    pub fn check(&self, statement: &DfStatement) -> Result<()> {
        match statement {
            DfStatement::Statement(inner) => self.check_visit(inner.as_ref()),
            DfStatement::Explain(explain) => self.check(&explain.statement),
            DfStatement::CopyTo(copy) => match &copy.source {
                CopyToSource::Query(query) => self.check_visit(query.as_ref()),
                CopyToSource::Relation(_) => Ok(()),
            },
            DfStatement::CreateExternalTable(_) | DfStatement::Reset(_) => Ok(()),
        }
    }

    fn check_visit<V: Visit>(&self, node: &V) -> Result<()> {
        let mut counter = Counter {
            limits: *self,
            depth: 0,
            nodes: 0,
            set_operations: 0,
        };
        match node.visit(&mut counter) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(message) => Err(Error::BadRequest(message)),
        }
    }
}

struct Counter {
    limits: SqlLimits,
    depth: usize,
    nodes: usize,
    set_operations: usize,
}

impl Counter {
    fn enter(&mut self) -> ControlFlow<String> {
        self.depth += 1;
        self.nodes += 1;
        if self.depth > self.limits.max_expression_depth {
            return ControlFlow::Break(format!(
                "the statement nests expressions or subqueries more than {} deep \
                 (query.max_expression_depth); split it or use IN (…) instead of long \
                 OR chains",
                self.limits.max_expression_depth
            ));
        }
        self.count_node()
    }

    fn count_node(&mut self) -> ControlFlow<String> {
        if self.nodes > self.limits.max_sql_nodes {
            return ControlFlow::Break(format!(
                "the statement has more than {} expressions, query blocks and table \
                 references (query.max_sql_nodes)",
                self.limits.max_sql_nodes
            ));
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Counter {
    type Break = String;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        // Set operations have no visitor hook of their own, and their chain is as deep as
        // it is long: count it here, without recursion, before the visitor descends.
        let mut pending: Vec<&SetExpr> = vec![query.body.as_ref()];
        while let Some(set_expr) = pending.pop() {
            if let SetExpr::SetOperation { left, right, .. } = set_expr {
                self.set_operations += 1;
                if self.set_operations + 1 > self.limits.max_set_operation_branches {
                    return ControlFlow::Break(format!(
                        "the statement has more than {} UNION / INTERSECT / EXCEPT branches \
                         (query.max_set_operation_branches)",
                        self.limits.max_set_operation_branches
                    ));
                }
                pending.push(left);
                pending.push(right);
            }
        }
        self.enter()
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, _factor: &TableFactor) -> ControlFlow<String> {
        self.nodes += 1;
        self.count_node()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    const LIMITS: SqlLimits = SqlLimits {
        max_expression_depth: 256,
        max_set_operation_branches: 256,
        max_sql_nodes: 100_000,
    };

    fn check(sql: &str) -> Result<()> {
        let mut statements = DFParser::parse_sql(sql).expect("parses");
        assert_eq!(statements.len(), 1);
        LIMITS.check(&statements.pop_front().expect("one"))
    }

    fn sum(terms: usize) -> String {
        format!("SELECT {}", vec!["1"; terms].join("+"))
    }

    fn unions(branches: usize) -> String {
        vec!["SELECT 1"; branches].join(" UNION ALL ")
    }

    #[test]
    fn everyday_statements_pass() {
        for sql in [
            "SELECT count(*) FROM spans WHERE service_name = 'a' AND duration_ns > 5",
            "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) \
             SELECT * FROM t",
            "EXPLAIN SELECT (SELECT max(x) FROM (SELECT 1 AS x)) AS m",
        ] {
            check(sql).unwrap();
        }
    }

    #[test]
    fn expression_depth_is_bounded_at_the_limit() {
        // `SELECT 1+…+1` with n terms nests n expressions inside one query block.
        check(&sum(LIMITS.max_expression_depth - 1)).unwrap();
        let err = check(&sum(LIMITS.max_expression_depth)).unwrap_err();
        assert!(
            err.to_string().contains("query.max_expression_depth"),
            "{err}"
        );
        let err = check(&sum(2_000)).unwrap_err();
        assert!(
            err.to_string().contains("query.max_expression_depth"),
            "{err}"
        );
        let ors = format!(
            "SELECT 1 FROM spans WHERE {}",
            (0..2_000)
                .map(|i| format!("flags = {i}"))
                .collect::<Vec<_>>()
                .join(" OR ")
        );
        let err = check(&ors).unwrap_err();
        assert!(
            err.to_string().contains("query.max_expression_depth"),
            "{err}"
        );
    }

    #[test]
    fn set_operation_branches_are_bounded_at_the_limit() {
        check(&unions(LIMITS.max_set_operation_branches)).unwrap();
        for n in [LIMITS.max_set_operation_branches + 1, 5_000] {
            let err = check(&unions(n)).unwrap_err();
            assert!(
                err.to_string().contains("query.max_set_operation_branches"),
                "{err}"
            );
        }
    }

    #[test]
    fn node_count_is_bounded() {
        let list = format!(
            "SELECT 1 WHERE 1 IN ({})",
            (0..100_001)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let err = check(&list).unwrap_err();
        assert!(err.to_string().contains("query.max_sql_nodes"), "{err}");
    }
}
