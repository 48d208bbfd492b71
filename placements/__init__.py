"""CRM widgets (placements), the custom userfield type, frame views and frame authentication."""
