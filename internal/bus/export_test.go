package bus

// PublishRetrying exposes publishRetrying to the external tests.
var PublishRetrying = publishRetrying
