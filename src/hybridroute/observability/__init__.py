"""Observability: request events, Prometheus metrics, the traffic window and SLO figures, alert
rules with their lifecycle, and the loop that samples gauges and evaluates alerts.

Every finished request becomes a `RequestEvent` (`events`) that the metrics (`metrics`) and the
traffic window (`traffic`) record in O(1); `slo` turns a window's totals into the SLO figures;
`alerts` evaluates the rules over them; `watch` runs the schedule.
"""
