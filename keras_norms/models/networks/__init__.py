"""The builders of the papers' networks and of the converted `keras.applications`."""
