//! Routing: the ordered routes of `alerting.routes` pick the receivers of an alert from its
//! fields (`severity`, `rule`, `kind`, `source`), its rule's labels and the money it puts at
//! risk (`min_impact`). The first route that matches takes the alert, unless it says
//! `continue`; a route without matchers matches all.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::config::RouteConfig;

/// The receivers of an alert with these fields and this impact (its rule's open violations'
/// sum, none for a rule without `impact`), each once, in route order.
pub fn receivers(
    routes: &[RouteConfig],
    fields: &BTreeMap<String, String>,
    impact: Option<Decimal>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for route in routes {
        let matches = route
            .matchers
            .iter()
            .all(|m| fields.get(&m.field) == Some(&m.value))
            && route
                .min_impact
                .is_none_or(|min| impact.is_some_and(|i| i >= min));
        if !matches {
            continue;
        }
        for r in &route.receivers {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        if !route.continue_ {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Matcher;
    use crate::diag::Pos;

    fn route(matchers: &[(&str, &str)], receivers: &[&str], continue_: bool) -> RouteConfig {
        RouteConfig {
            matchers: matchers
                .iter()
                .map(|(f, v)| Matcher {
                    field: f.to_string(),
                    value: v.to_string(),
                    pos: Pos::default(),
                })
                .collect(),
            receivers: receivers.iter().map(|r| r.to_string()).collect(),
            continue_,
            min_impact: None,
            pos: Pos::default(),
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn first_match_wins_continue_falls_through_and_the_default_catches_the_rest() {
        let routes = [
            route(&[("severity", "critical")], &["pager", "mail"], true),
            route(&[("team", "inventory")], &["inventory-chat"], false),
            route(&[("kind", "source_down")], &["dba"], false),
            route(&[], &["chat"], false),
        ];
        let critical_inventory = fields(&[
            ("severity", "critical"),
            ("kind", "violation"),
            ("team", "inventory"),
        ]);
        assert_eq!(
            receivers(&routes, &critical_inventory, None),
            ["pager", "mail", "inventory-chat"]
        );
        let warning_payments = fields(&[("severity", "warning"), ("team", "payments")]);
        assert_eq!(receivers(&routes, &warning_payments, None), ["chat"]);
        let source = fields(&[("severity", "warning"), ("kind", "source_down")]);
        assert_eq!(receivers(&routes, &source, None), ["dba"]);
        // A label the alert does not have never matches.
        assert_eq!(
            receivers(&routes[1..2], &source, None),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_small_loss_opens_a_ticket_and_a_large_one_pages() {
        let mut page = route(&[("kind", "violation")], &["pager"], false);
        page.min_impact = Some(Decimal::from(100_000));
        let routes = [page, route(&[], &["tickets"], false)];
        let violation = fields(&[("severity", "warning"), ("kind", "violation")]);
        let small = Some(Decimal::from(99_999));
        let large = Some(Decimal::from(100_000));
        assert_eq!(receivers(&routes, &violation, small), ["tickets"]);
        assert_eq!(receivers(&routes, &violation, large), ["pager"]);
        // A rule without impact never takes a route that asks for one.
        assert_eq!(receivers(&routes, &violation, None), ["tickets"]);
    }
}
