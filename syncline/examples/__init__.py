"""Example applications, shipped in the wheel so that ``syncline serve
syncline.examples.notes.app:app`` runs from an installed package."""
