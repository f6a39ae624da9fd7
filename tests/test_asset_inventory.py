"""The asset inventory: file formats, longest-prefix and wildcard matching, inheritance, the stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.asset_inventory import AssetInventory, AssetInventoryError, AssetStage
from collectors.demo_day import DEPARTMENTS
from collectors.longest_match import DomainTable, IpPrefixTable, parse_ip
from lianfang.schema import Event, Origin

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "assets.example.yaml"

YAML = """
assets:
  - match: [10.0.0.0/8]
    organization_id: province
    organization_name: 省大数据局
    sector: government
    criticality: low
    owner: 网络中心
  - match: [10.20.0.0/16, "*.finance.example", "2001:db8:20::/48"]
    organization_id: finance
    organization_name: 省财政厅
    sector: finance
    criticality: high
  - match: [10.20.1.14, fin-file-01, fin-file-01.finance.example]
    name: fin-file-01
    criticality: critical
    owner: 财政厅信息中心
  - match: ["*.db.finance.example"]
    criticality: CRITICAL
"""


@pytest.fixture
def inventory(tmp_path: Path) -> AssetInventory:
    path = tmp_path / "assets.yaml"
    path.write_text(YAML, encoding="utf-8")
    return AssetInventory.load(path)


def test_longest_prefix_wins_and_fields_are_inherited(inventory: AssetInventory) -> None:
    server = inventory.match_address("10.20.1.14")
    assert server is not None
    assert (server.name, server.criticality, server.owner) == (
        "fin-file-01",
        "critical",
        "财政厅信息中心",
    )
    assert (server.organization_id, server.sector) == ("finance", "finance")  # from the /16
    network = inventory.match_address("10.20.9.9")
    assert network is not None
    assert (network.organization_id, network.criticality, network.owner) == (
        "finance",
        "high",
        "网络中心",
    )
    wide = inventory.match_address("10.99.0.1")
    assert wide is not None and wide.organization_id == "province"
    assert inventory.match_address("192.0.2.1") is None
    assert inventory.match_address("not an address") is None


def test_ipv6_and_ipv4_mapped_addresses(inventory: AssetInventory) -> None:
    v6 = inventory.match_address("2001:db8:20::5")
    assert v6 is not None and v6.organization_id == "finance"
    mapped = inventory.match_address("::ffff:10.20.1.14")
    assert mapped is not None and mapped.name == "fin-file-01"
    assert inventory.match_address("2001:db8:21::5") is None


def test_host_names_exact_then_wildcards_case_insensitive(inventory: AssetInventory) -> None:
    exact = inventory.match_host("FIN-FILE-01.")
    assert exact is not None and exact.name == "fin-file-01"
    # A name listed with an address inherits what its network says.
    assert exact.organization_id == "finance"
    below = inventory.match_host("app.finance.example")
    assert below is not None and below.organization_id == "finance" and below.criticality == "high"
    deeper = inventory.match_host("pg.db.finance.example")
    assert deeper is not None and deeper.criticality == "critical"
    assert deeper.organization_id == "finance"  # inherited from *.finance.example
    assert inventory.match_host("finance.example") is None  # a wildcard is not its own name
    assert inventory.match_host("other.example") is None


def test_csv_inventory(tmp_path: Path) -> None:
    path = tmp_path / "assets.csv"
    path.write_text(
        "match,organization_id,organization_name,sector,criticality,owner,name\n"
        "10.30.0.0/16 *.energy.example,energy,省电力公司,energy,high,调度处,\n"
        "10.30.1.11 scada-hmi-01,,,,critical,,scada-hmi-01\n",
        encoding="utf-8",
    )
    inventory = AssetInventory.load(path)
    hmi = inventory.match_host("scada-hmi-01")
    assert hmi is not None
    assert (hmi.organization_id, hmi.criticality, hmi.owner) == ("energy", "critical", "调度处")
    assert inventory.match_any("10.30.1.11") == hmi


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("assets:\n  - {match: [10.0.0.1/8]}\n", "bad match"),  # host bits set
        ("assets:\n  - {match: [10.0.0.0/8], criticality: urgent}\n", "criticality"),
        ("assets:\n  - {match: [a], owners: x}\n", "unknown key"),
        ("assets:\n  - {organization_id: x}\n", "'match'"),
        ("assets:\n  - {match: [a.example]}\n  - {match: [A.example.]}\n", "already listed"),
        ("assets:\n  - {match: ['x.*.example']}\n", "bad match"),
        ("hosts: []\n", "'assets' list"),
        ("assets: [\n", "invalid YAML"),
    ],
)
def test_malformed_inventories_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "assets.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(AssetInventoryError, match=message):
        AssetInventory.load(path)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(AssetInventoryError, match="cannot read"):
        AssetInventory.load(tmp_path / "nope.yaml")
    other = tmp_path / "assets.json"
    other.write_text("{}")
    with pytest.raises(AssetInventoryError, match=r"\.yaml"):
        AssetInventory.load(other)


def _event(document: dict) -> Event:
    return Event(document=document, origin=Origin("test", 0))


def test_stage_tags_every_side_and_fills_a_missing_department(inventory: AssetInventory) -> None:
    event = _event(
        {
            "source": {"ip": "203.0.113.5"},
            "destination": {"ip": "10.20.1.14", "port": 445},
            "host": {"name": "pg.db.finance.example", "ip": ["10.99.0.1"]},
        }
    )
    document = AssetStage(inventory)(event).document
    assert "organization" not in document["source"] and "asset" not in document["source"]
    assert document["destination"]["organization"] == {"id": "finance", "name": "省财政厅"}
    assert document["destination"]["asset"] == {
        "criticality": "critical",
        "owner": "财政厅信息中心",
        "sector": "finance",
        "name": "fin-file-01",
    }
    assert document["destination"]["port"] == 445
    assert document["host"]["asset"]["criticality"] == "critical"  # by name before address
    assert document["organization"] == {"id": "finance", "name": "省财政厅"}  # from the host
    assert document["labels"] == {"sector": "finance"}


def test_stage_keeps_what_the_event_says(inventory: AssetInventory) -> None:
    event = _event(
        {
            "organization": {"id": "transport"},
            "source": {"ip": "10.20.1.14", "asset": {"criticality": "low"}},
        }
    )
    document = AssetStage(inventory)(event).document
    assert document["organization"] == {"id": "transport"}
    assert document["source"]["asset"]["criticality"] == "low"
    assert document["source"]["asset"]["name"] == "fin-file-01"


def test_stage_uses_source_then_destination_for_the_department(inventory: AssetInventory) -> None:
    inbound = _event({"source": {"ip": "198.51.100.1"}, "destination": {"ip": "10.20.0.9"}})
    assert AssetStage(inventory)(inbound).document["organization"]["id"] == "finance"
    named = _event({"source": {"address": "fin-file-01"}})
    assert AssetStage(inventory)(named).document["organization"]["id"] == "finance"


def test_example_inventory_covers_the_demo_departments() -> None:
    inventory = AssetInventory.load(EXAMPLE)
    for department in DEPARTMENTS:
        network_address = department.network.split("/")[0]
        asset = inventory.match_address(network_address)
        assert asset is not None
        assert (asset.organization_id, asset.organization_name, asset.sector) == (
            department.id,
            department.name,
            department.sector,
        )
        for host in department.hosts:
            by_name = inventory.match_host(host)
            assert by_name is not None and by_name.name == host
            assert by_name.organization_id == department.id
    assert inventory.match_address("10.30.1.11").criticality == "critical"  # the SCADA HMI
    assert inventory.match_host("gc-bastion").criticality == "critical"


def test_lookups_cost_one_probe_per_prefix_length() -> None:
    table: IpPrefixTable[int] = IpPrefixTable()
    for third in range(256):
        for fourth in range(0, 256, 16):
            table.add(f"10.{third}.{fourth}.0/28", third)
    table.add("10.0.0.0/8", -1)
    assert len(table) == 256 * 16 + 1
    assert table.prefix_lengths[4] == [28, 8]
    assert table.lookup("10.7.32.5") == 7
    assert table.lookup("10.7.16.15") == 7
    assert table.lookup("10.7.1.5") == -1  # no /28 there: the /8
    assert table.lookup("11.0.0.1") is None
    assert table.get("10.0.0.0/8") == -1 and table.get("10.0.0.0/9") is None


def test_parse_ip_is_strict() -> None:
    assert parse_ip("10.1.2.3") == (4, 0x0A010203)
    assert parse_ip("fe80::1%eth0") == (6, (0xFE80 << 112) + 1)
    for bad in ("10.1", "10.1.2.256", "1.2.3.4 ", "", "::g", "10.1.2.3/8"):
        assert parse_ip(bad) is None


def test_domain_table_with_subdomains() -> None:
    table: DomainTable[str] = DomainTable(match_subdomains=True)
    table.add("evil.example", "a")
    table.add("cdn.evil.example", "b")
    assert [pattern for pattern, _ in table.matches("x.cdn.evil.example")] == [
        "cdn.evil.example",
        "evil.example",
    ]
    assert table.lookup_value("evil.example") == "a"
    assert table.lookup("notevil.example") is None
