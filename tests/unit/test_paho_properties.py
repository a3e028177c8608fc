"""paho-mqtt's MQTT 5 Properties with shared tables behave exactly as paho's own."""

from __future__ import annotations

import importlib.metadata

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

from medmesh.ingest import paho_properties
from medmesh.ingest.paho_properties import CHECKED_VERSION, share_property_tables


def _publish_properties() -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.PayloadFormatIndicator = 1
    properties.MessageExpiryInterval = 3600
    properties.ContentType = "application/json"
    properties.ResponseTopic = "medmesh/v1/devices/d1/replies"
    properties.CorrelationData = b"\x00\x01"
    properties.UserProperty = ("firmware", "2.1")
    properties.UserProperty = ("site", "ward 3")
    return properties


def _original(packet_type: int) -> Properties:
    properties = Properties.__new__(Properties)
    paho_properties._original_init(properties, packet_type)
    return properties


def test_the_installed_paho_is_the_version_the_tables_were_checked_against() -> None:
    # Moving the paho-mqtt pin fails here: check that paho still only reads the tables, then
    # move CHECKED_VERSION with it.
    assert importlib.metadata.version("paho-mqtt") == CHECKED_VERSION
    assert share_property_tables()


def test_properties_share_one_copy_of_the_tables() -> None:
    share_property_tables()
    publish, connect = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.CONNECT)
    assert publish.names is connect.names
    assert publish.properties is connect.properties
    assert (publish.names, publish.properties, publish.types) == (
        (original := _original(PacketTypes.PUBLISH)).names,
        original.properties,
        original.types,
    )


def test_publish_properties_pack_and_unpack_as_with_pahos_own_init() -> None:
    share_property_tables()
    packed = _publish_properties().pack()
    received = Properties(PacketTypes.PUBLISH)
    received.unpack(packed)
    assert received.json() == {
        "PayloadFormatIndicator": 1,
        "MessageExpiryInterval": 3600,
        "ContentType": "application/json",
        "ResponseTopic": "medmesh/v1/devices/d1/replies",
        "CorrelationData": "0001",
        "UserProperty": [("firmware", "2.1"), ("site", "ward 3")],
    }
    original = _original(PacketTypes.PUBLISH)
    original.unpack(packed)
    assert original.json() == received.json()
    assert original.pack() == packed


def test_clear_removes_every_property_and_nothing_else() -> None:
    share_property_tables()
    properties = _publish_properties()
    properties.clear()
    assert properties.isEmpty()
    assert properties.pack() == b"\x00"
    assert properties.packetType == PacketTypes.PUBLISH
    properties.ContentType = "text/plain"  # still a Properties that takes properties
    assert properties.json() == {"ContentType": "text/plain"}


def test_a_property_of_another_packet_is_still_refused() -> None:
    share_property_tables()
    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = 3600
    connect.ReceiveMaximum = 1000
    assert connect.pack() == b"\x08\x11\x00\x00\x0e\x10\x21\x03\xe8"
    with pytest.raises(MQTTException, match="does not apply"):
        Properties(PacketTypes.PUBLISH).SessionExpiryInterval = 3600
    with pytest.raises(MQTTException, match="range 1-65535"):
        connect.ReceiveMaximum = 0


def test_another_paho_version_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Properties, "__init__", paho_properties._original_init)
    monkeypatch.setattr(Properties, "clear", paho_properties._original_clear)
    assert not share_property_tables(version="2.3.0")
    assert Properties.__init__ is paho_properties._original_init
    assert Properties.clear is paho_properties._original_clear
    assert Properties(PacketTypes.PUBLISH).names is not Properties(PacketTypes.PUBLISH).names
