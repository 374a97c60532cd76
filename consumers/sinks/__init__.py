"""Result sinks: consumers that hand labels and emotion episodes to other systems (MQTT, webhooks)."""
