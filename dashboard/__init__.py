"""The live web dashboard (`fer-pipeline dashboard`): reads Redis, joins no consumer group.
Nothing else in the product imports it."""
