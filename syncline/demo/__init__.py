"""The web demo served by ``syncline demo``."""
