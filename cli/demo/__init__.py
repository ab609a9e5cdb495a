"""`xaso demo`: a broker, a simulated fleet and the real controller on one machine."""
