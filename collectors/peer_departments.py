"""Which department sent a network message, from the sender's address.

A collector configuration maps peer networks to departments (`[collector.peers]`,
longest prefix wins). A peer outside every listed network belongs to the listener's own
department when it has one (a port dedicated to a department), else it is looked up in
the asset inventory, when there is one (its `organization_id`). A peer none of them knows
is *unknown*: its messages are still ingested, without a department, and counted and
tagged as such.
"""

from __future__ import annotations

from collections.abc import Mapping

from collectors.asset_inventory import AssetInventory
from collectors.longest_match import IpPrefixTable
from collectors.normalise import Department


class PeerDepartments:
    """Longest-prefix lookup of a peer address's department, with the asset inventory behind it."""

    def __init__(
        self,
        networks: Mapping[str, Department] | None = None,
        inventory: AssetInventory | None = None,
        default: Department | None = None,
    ) -> None:
        self.table: IpPrefixTable[Department] = IpPrefixTable()
        for network, department in (networks or {}).items():
            self.table.add(network, department)  # ValueError for a malformed network
        self.inventory = inventory
        self.default = default

    def __len__(self) -> int:
        return len(self.table)

    def department_of(self, address: str) -> Department | None:
        """The department of a peer address, or None for an unknown peer."""
        department = self.table.lookup(address)
        if department is not None:
            return department
        if self.default is not None:
            return self.default
        if self.inventory is not None:
            asset = self.inventory.match_address(address)
            if asset is not None and asset.organization_id:
                return Department(asset.organization_id, asset.organization_name, asset.sector)
        return None
