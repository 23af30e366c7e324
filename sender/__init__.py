"""The sending side: capture row changes and deliver signed webhooks."""
