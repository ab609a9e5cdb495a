"""MQTT brokers run as child processes for the demo and the tests: Mosquitto,
or amqtt where Mosquitto is missing, both reading the site's password and ACL
files."""
