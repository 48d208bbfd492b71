"""The support console: admin's home dashboard, the operators' /metrics endpoint, readable schedules.

Top floor (above placements): it reads every app's models and changes none of them."""
