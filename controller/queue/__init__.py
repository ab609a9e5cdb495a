"""The queue as the controller keeps it: bookings ahead for the kiosks' offices."""
