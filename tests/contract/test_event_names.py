"""Event names say who announced what happened: <service>.<entity>.<verb in the past tense>."""

from clinic import events


def test_every_routing_key_names_service_entity_and_a_past_tense_verb():
    for event_type, _ in events.SCHEMAS:
        if event_type.startswith("probe."):
            continue
        service, entity, verb = event_type.split(".")
        assert service in {"records", "scheduling", "sessions"}
        assert any(word.endswith("ed") for word in verb.split("_")) or verb == "no_show", event_type
