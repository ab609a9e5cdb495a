"""The tests' ESC/POS reader now lives in kiosk.escpos_read (the demo's printer uses it too)."""

from kiosk.escpos_read import Code2D, Command, Cut, Raster, Text, parse, qr_data

__all__ = ["Code2D", "Command", "Cut", "Raster", "Text", "parse", "qr_data"]
