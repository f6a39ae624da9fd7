"""The demo day: a seeded, reproducible day of logs from several departments with attack stories.

Four departments across the critical sectors produce normal activity (SSH and sudo in
syslog, network flows, DNS and database audit records as ECS JSON lines), and four
attack stories are woven in. `truth.json` names every story with its ATT&CK techniques,
entities and time window, so detection can be measured against it.

Baseline days (`generate_baseline_days`) are the same departments' ordinary activity on the
days before the demo day, without any story: a clean period to train anomaly models on.
"""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

LOCAL_ZONE = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class DemoDepartment:
    """A department of the demo province."""

    id: str
    name: str
    sector: str
    network: str
    hosts: tuple[str, ...]
    users: tuple[str, ...]
    databases: tuple[str, ...]


DEPARTMENTS: tuple[DemoDepartment, ...] = (
    DemoDepartment(
        "gov-cloud",
        "省政务云平台",
        "government",
        "10.10.0.0/16",
        ("gc-web-01", "gc-web-02", "gc-app-01", "gc-db-01", "gc-bastion"),
        ("admin", "ops.li", "ops.wang", "deploy", "backup"),
        ("egov",),
    ),
    DemoDepartment(
        "finance",
        "省财政厅",
        "finance",
        "10.20.0.0/16",
        ("fin-app-01", "fin-app-02", "fin-db-01", "fin-file-01"),
        ("chen.jing", "liu.yang", "fin_batch", "auditor"),
        ("budget", "payroll"),
    ),
    DemoDepartment(
        "energy",
        "省电力公司",
        "energy",
        "10.30.0.0/16",
        ("scada-hmi-01", "scada-hist-01", "ems-app-01", "ems-db-01"),
        ("operator1", "operator2", "eng.zhao", "historian"),
        ("historian",),
    ),
    DemoDepartment(
        "transport",
        "省交通运输厅",
        "transport",
        "10.40.0.0/16",
        ("tr-portal-01", "tr-app-01", "tr-db-01"),
        ("zhang.wei", "sun.li", "report_svc", "etl"),
        ("citizen", "vehicles"),
    ),
)

COMMON_DOMAINS = (
    "www.gov.cn",
    "update.microsoft.com",
    "mirrors.aliyun.com",
    "api.weixin.qq.com",
    "ntp.aliyun.com",
    "www.baidu.com",
    "pypi.org",
    "registry.npmjs.org",
)
DB_TABLES = ("orders", "accounts", "payments", "schedules", "citizen_records", "permits", "meters")
ATTACKER_BRUTE_FORCE = "203.0.113.77"
ATTACKER_SCANNER = "198.51.100.23"
EXFILTRATION_SERVER = "185.220.101.9"


@dataclass(frozen=True)
class DemoSpec:
    """What to generate: seed, day (UTC; default yesterday), background volume, attack stories."""

    seed: int = 20261128
    day: date | None = None
    scale: float = 1.0
    stories: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 100:
            raise ValueError(f"scale must be in (0, 100], not {self.scale}")

    @property
    def the_day(self) -> date:
        return self.day or (datetime.now(UTC).date() - timedelta(days=1))


@dataclass
class _Writers:
    """Collects lines per department and kind, and writes each file in time order."""

    out_dir: Path
    buffered: dict[tuple[str, str], list[tuple[datetime, str]]] = field(default_factory=dict)

    FILE_NAMES: ClassVar[dict[str, str]] = {"syslog": "auth.log", "json": "events.ndjson"}

    def write(self, department: str, kind: str, moment: datetime, line: str) -> None:
        self.buffered.setdefault((department, kind), []).append((moment, line))

    def flush(self) -> dict[tuple[str, str], int]:
        """Write every file sorted by time (stable for equal times); returns line counts."""
        counts: dict[tuple[str, str], int] = {}
        for (department, kind), lines in self.buffered.items():
            folder = self.out_dir / department
            folder.mkdir(parents=True, exist_ok=True)
            lines.sort(key=lambda item: item[0])
            with (folder / self.FILE_NAMES[kind]).open("w", encoding="utf-8") as handle:
                handle.writelines(line + "\n" for _, line in lines)
            counts[(department, kind)] = len(lines)
        return counts


class _DayGenerator:
    """Builds one demo day; every random draw comes from one seeded generator, in order."""

    def __init__(self, spec: DemoSpec, writers: _Writers) -> None:
        self.spec = spec
        self.random = random.Random(spec.seed)
        self.writers = writers
        day = spec.the_day
        self.start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        self.stories: list[dict[str, Any]] = []
        self.host_ips: dict[str, str] = {}
        for department in DEPARTMENTS:
            network = ipaddress.ip_network(department.network)
            for number, host in enumerate(department.hosts, start=11):
                self.host_ips[host] = str(network.network_address + 256 + number)

    # -- time and formatting

    def moment(self, busy: bool = True) -> datetime:
        """A random time of the day, mostly in local working hours when `busy`."""
        if busy and self.random.random() < 0.8:
            local_hour = self.random.uniform(8.5, 18.5)
            seconds = ((local_hour - 8) % 24) * 3600  # 08:00 Shanghai is 00:00 UTC
        else:
            seconds = self.random.uniform(0, 86400)
        return self.start + timedelta(seconds=seconds)

    def at_local(self, hour: int, minute: int) -> datetime:
        """The day's UTC instant for a local (Asia/Shanghai) wall-clock time."""
        local = self.start.astimezone(LOCAL_ZONE).replace(hour=hour, minute=minute, second=0)
        if local < self.start.astimezone(LOCAL_ZONE):
            local += timedelta(days=1)
        return local.astimezone(UTC)

    @staticmethod
    def syslog_time(moment: datetime) -> str:
        local = moment.astimezone(LOCAL_ZONE)
        return f"{local:%b} {local.day:>2} {local:%H:%M:%S}"

    @staticmethod
    def iso(moment: datetime) -> str:
        return moment.astimezone(LOCAL_ZONE).isoformat(timespec="milliseconds")

    def internal_ip(self, department: DemoDepartment) -> str:
        network = ipaddress.ip_network(department.network)
        return str(network.network_address + self.random.randint(512, 4000))

    def external_ip(self) -> str:
        return f"{self.random.choice((36, 58, 101, 111, 113, 117, 120, 180, 220))}.{self.random.randint(1, 254)}.{self.random.randint(1, 254)}.{self.random.randint(1, 254)}"

    # -- background

    def background(self) -> None:
        for department in DEPARTMENTS:
            count = int(1.0 * self.spec.scale * 1000)
            for _ in range(count):
                self.ssh_and_sudo(department)
            for _ in range(int(self.spec.scale * 14000)):
                self.flow(department)
            for _ in range(int(self.spec.scale * 4000)):
                self.dns(department)
            for _ in range(int(self.spec.scale * 1500)):
                self.database_query(department)

    def ssh_and_sudo(self, department: DemoDepartment) -> None:
        moment = self.moment()
        host = self.random.choice(department.hosts)
        user = self.random.choice(department.users)
        pid = self.random.randint(1000, 60000)
        admin_ip = self.internal_ip(department)
        port = self.random.randint(30000, 65000)
        roll = self.random.random()
        if roll < 0.55:
            method = self.random.choice(("publickey", "publickey", "password"))
            text = f"Accepted {method} for {user} from {admin_ip} port {port} ssh2"
            program = "sshd"
        elif roll < 0.62:
            text = f"Failed password for {user} from {admin_ip} port {port} ssh2"
            program = "sshd"
        elif roll < 0.9:
            command = self.random.choice(
                (
                    "/usr/bin/systemctl restart nginx",
                    "/usr/bin/journalctl -u app",
                    "/usr/bin/apt update",
                )
            )
            text = f"{user} : TTY=pts/{self.random.randint(0, 5)} ; PWD=/home/{user} ; USER=root ; COMMAND={command}"
            program = "sudo"
        else:
            text = "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"
            program = "CRON"
        tag = f"{program}[{pid}]" if program != "sudo" else program
        self.writers.write(
            department.id, "syslog", moment, f"{self.syslog_time(moment)} {host} {tag}: {text}"
        )

    def json_event(
        self, department: DemoDepartment, moment: datetime, document: dict[str, Any]
    ) -> None:
        document = {"@timestamp": self.iso(moment), **document}
        line = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        self.writers.write(department.id, "json", moment, line)

    def flow(self, department: DemoDepartment) -> None:
        moment = self.moment()
        source = (
            self.internal_ip(department)
            if self.random.random() < 0.85
            else self.random.choice([self.host_ips[h] for h in department.hosts])
        )
        outbound = self.random.random() < 0.6
        destination = (
            self.external_ip() if outbound else self.host_ips[self.random.choice(department.hosts)]
        )
        port = self.random.choice((443, 443, 443, 80, 53, 22, 3306, 8080, 123))
        sent = int(self.random.lognormvariate(7.5, 1.3))
        received = int(self.random.lognormvariate(9.0, 1.5))
        self.flow_event(
            department,
            moment,
            source=(source, self.random.randint(30000, 65000), sent),
            destination=(destination, port, received),
            transport="udp" if port in (53, 123) else "tcp",
            direction="outbound" if outbound else "internal",
        )

    def flow_event(
        self,
        department: DemoDepartment,
        moment: datetime,
        *,
        source: tuple[str, int, int],
        destination: tuple[str, int, int],
        transport: str,
        direction: str,
        allowed: bool = True,
    ) -> None:
        """One firewall flow record; source and destination are (ip, port, bytes)."""
        self.json_event(
            department,
            moment,
            {
                "event": {
                    "kind": "event",
                    "category": ["network"],
                    "type": ["connection", "allowed" if allowed else "denied"],
                    "action": "flow",
                    "outcome": "success" if allowed else "failure",
                    "dataset": "flow",
                },
                "source": dict(zip(("ip", "port", "bytes"), source, strict=True)),
                "destination": dict(zip(("ip", "port", "bytes"), destination, strict=True)),
                "network": {
                    "transport": transport,
                    "direction": direction,
                    "bytes": source[2] + destination[2],
                },
                "observer": {"name": f"{department.id}-fw", "type": "firewall"},
            },
        )

    def dns(self, department: DemoDepartment) -> None:
        moment = self.moment()
        self.json_event(
            department,
            moment,
            {
                "event": {
                    "kind": "event",
                    "category": ["network"],
                    "type": ["protocol"],
                    "action": "dns_query",
                    "dataset": "dns",
                },
                "source": {"ip": self.internal_ip(department)},
                "destination": {"ip": "114.114.114.114", "port": 53},
                "network": {"transport": "udp", "protocol": "dns"},
                "dns": {
                    "question": {"name": self.random.choice(COMMON_DOMAINS), "type": "A"},
                    "response_code": "NOERROR",
                },
            },
        )

    def database_query(
        self,
        department: DemoDepartment,
        *,
        user: str | None = None,
        moment: datetime | None = None,
        rows: int | None = None,
        statement: str | None = None,
    ) -> None:
        moment = moment or self.moment()
        user = user or self.random.choice(department.users)
        table = self.random.choice(DB_TABLES)
        rows = rows if rows is not None else int(self.random.lognormvariate(3.0, 1.0))
        statement = (
            statement
            or f"SELECT id, status, updated_at FROM {table} WHERE owner_id = {self.random.randint(1, 99999)}"
        )
        db_host = next(h for h in department.hosts if "db" in h or "hist" in h)
        self.json_event(
            department,
            moment,
            {
                "event": {
                    "kind": "event",
                    "category": ["database"],
                    "type": ["access"],
                    "action": "select",
                    "outcome": "success",
                    "dataset": "sql.audit",
                },
                "user": {"name": user},
                "source": {"ip": self.internal_ip(department)},
                "host": {"name": db_host},
                "db": {
                    "user": user,
                    "name": self.random.choice(department.databases),
                    "statement": statement,
                    "rows": rows,
                },
            },
        )

    # -- stories

    def story(self, **fields: Any) -> None:
        self.stories.append(fields)

    def ssh_brute_force_then_success(self) -> None:
        department = DEPARTMENTS[0]
        host = "gc-bastion"
        begin = self.at_local(2, 10)
        moment = begin
        tried = [
            "root",
            "admin",
            "oracle",
            "test",
            "ubuntu",
            "postgres",
            "git",
            "user",
            "ftp",
            "www",
        ]
        failures = 0
        for attempt in range(320):
            moment += timedelta(seconds=self.random.uniform(0.5, 2.5))
            user = tried[attempt % len(tried)]
            port = self.random.randint(40000, 65000)
            prefix = "invalid user " if user not in department.users else ""
            self.writers.write(
                department.id,
                "syslog",
                moment,
                f"{self.syslog_time(moment)} {host} sshd[{7000 + attempt}]: Failed password for {prefix}{user} from {ATTACKER_BRUTE_FORCE} port {port} ssh2",
            )
            failures += 1
        moment += timedelta(seconds=20)
        self.writers.write(
            department.id,
            "syslog",
            moment,
            f"{self.syslog_time(moment)} {host} sshd[7400]: Accepted password for admin from {ATTACKER_BRUTE_FORCE} port 51515 ssh2",
        )
        self.story(
            id="ssh-brute-force-then-success",
            description="SSH brute force against the government cloud bastion, then a successful admin login",
            department=department.id,
            techniques=["T1110.001", "T1078"],
            entities={"source.ip": ATTACKER_BRUTE_FORCE, "host.name": host, "user.name": "admin"},
            start=self.iso(begin),
            end=self.iso(moment),
            events=failures + 1,
        )

    def port_scan(self) -> None:
        department = DEPARTMENTS[2]
        target = self.host_ips["scada-hmi-01"]
        begin = self.at_local(11, 40)
        moment = begin
        ports = list(range(1, 1025))
        for port in ports:
            moment += timedelta(milliseconds=self.random.randint(20, 120))
            self.flow_event(
                department,
                moment,
                source=(ATTACKER_SCANNER, self.random.randint(40000, 65000), 60),
                destination=(target, port, 0),
                transport="tcp",
                direction="inbound",
                allowed=False,
            )
        self.story(
            id="port-scan",
            description="Vertical TCP port scan of an energy SCADA HMI from the internet",
            department=department.id,
            techniques=["T1046"],
            entities={"source.ip": ATTACKER_SCANNER, "destination.ip": target},
            start=self.iso(begin),
            end=self.iso(moment),
            events=len(ports),
        )

    def night_exfiltration(self) -> None:
        department = DEPARTMENTS[1]
        source = self.host_ips["fin-file-01"]
        begin = self.at_local(3, 5)
        moment = begin
        total = 0
        for _ in range(24):
            moment += timedelta(seconds=self.random.randint(60, 120))
            sent = self.random.randint(90_000_000, 110_000_000)
            total += sent
            self.flow_event(
                department,
                moment,
                source=(source, self.random.randint(40000, 65000), sent),
                destination=(EXFILTRATION_SERVER, 443, self.random.randint(20_000, 60_000)),
                transport="tcp",
                direction="outbound",
            )
        self.story(
            id="night-exfiltration",
            description="A finance file server sends 2.4 GB to an internet host at 03:00 local time",
            department=department.id,
            techniques=["T1048", "T1041"],
            entities={"source.ip": source, "destination.ip": EXFILTRATION_SERVER},
            start=self.iso(begin),
            end=self.iso(moment),
            events=24,
            bytes=total,
        )

    def database_export(self) -> None:
        department = DEPARTMENTS[3]
        user = "zhang.wei"
        begin = self.at_local(22, 30)
        moment = begin
        for batch in range(6):
            moment += timedelta(minutes=self.random.randint(2, 6))
            self.database_query(
                department,
                user=user,
                moment=moment,
                rows=250_000,
                statement=f"SELECT name, id_number, phone, address FROM citizen_records LIMIT 250000 OFFSET {batch * 250000}",
            )
        self.story(
            id="database-export",
            description="One transport account exports 1.5 million citizen records at night",
            department=department.id,
            techniques=["T1213"],
            entities={"user.name": user},
            start=self.iso(begin),
            end=self.iso(moment),
            events=6,
            rows=1_500_000,
        )


def generate_demo_day(spec: DemoSpec, out_dir: Path) -> dict[str, Any]:
    """Write the demo files under `out_dir`; returns the manifest (also written as truth.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = _Writers(out_dir)
    generator = _DayGenerator(spec, writers)
    generator.background()
    if spec.stories:
        generator.ssh_brute_force_then_success()
        generator.port_scan()
        generator.night_exfiltration()
        generator.database_export()
    line_counts = writers.flush()
    formats = {"syslog": "syslog", "json": "json"}
    files = [
        {
            "path": f"{department}/{_Writers.FILE_NAMES[kind]}",  # relative to out_dir
            "department": department,
            "format": formats[kind],
            "lines": count,
        }
        for (department, kind), count in sorted(line_counts.items())
    ]
    manifest = {
        "seed": spec.seed,
        "day": spec.the_day.isoformat(),
        "events": sum(item["lines"] for item in files),
        "departments": [
            {"id": d.id, "name": d.name, "sector": d.sector, "network": d.network}
            for d in DEPARTMENTS
        ],
        "files": files,
        "stories": generator.stories,
    }
    (out_dir / "truth.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return manifest


BASELINE_FOLDER = "baseline"
BASELINE_MANIFEST = "baseline.json"
MAX_BASELINE_DAYS = 28


def is_working_day(day: date) -> bool:
    """Monday to Friday: the working days of the feature sets' default working hours."""
    return day.weekday() < 5


def baseline_day_specs(spec: DemoSpec, days: int) -> list[DemoSpec]:
    """The `days` most recent days before the demo day of its kind, oldest first, no stories.

    The generator puts most activity in office hours on every date, while the anomaly
    feature sets count all of Saturday and Sunday as off-hours: a weekday baseline would
    make a weekend demo day look unusual throughout (and the reverse), so baseline days are
    working days for a working demo day and weekend days for a weekend one. They have the
    demo day's scale: anomaly features count per entity and hour, so a thinner baseline would
    make every busy server and account look unusual. Each day's seed is the demo seed plus
    the day's distance to the demo day: reproducible, and never the demo day's own draws.
    """
    if not 1 <= days <= MAX_BASELINE_DAYS:
        raise ValueError(f"baseline days must be between 1 and {MAX_BASELINE_DAYS}, not {days}")
    demo_day = spec.the_day
    wanted = is_working_day(demo_day)
    chosen: list[DemoSpec] = []
    back = 0
    while len(chosen) < days:
        back += 1
        day = demo_day - timedelta(days=back)
        if is_working_day(day) == wanted:
            chosen.append(
                DemoSpec(
                    seed=spec.seed + back,
                    day=day,
                    scale=spec.scale,
                    stories=False,
                )
            )
    return chosen[::-1]


def _remove_previous_baseline(out_dir: Path) -> None:
    """Remove the day folders an earlier baseline listed, so only the new days remain."""
    manifest = out_dir / BASELINE_MANIFEST
    if not manifest.is_file():
        return
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8")).get("days", [])
    except (OSError, ValueError):
        return
    for name in previous:
        folder = out_dir / str(name)
        if str(name) and folder.parent == out_dir and folder.is_dir():
            shutil.rmtree(folder)


def generate_baseline_days(spec: DemoSpec, days: int, out_dir: Path) -> dict[str, Any]:
    """Write story-free baseline days before the demo day under `out_dir/<YYYY-MM-DD>/`.

    Returns the baseline manifest (also written as `out_dir/baseline.json`): the days, the
    range [start, end) from the first day's start to the last day's end (UTC), every file
    (path relative to `out_dir`, with its department) and the event count. The folders of
    the previous baseline written there are replaced.
    """
    specs = baseline_day_specs(spec, days)
    _remove_previous_baseline(out_dir)
    files: list[dict[str, Any]] = []
    for day_spec in specs:
        folder = day_spec.the_day.isoformat()
        manifest = generate_demo_day(day_spec, out_dir / folder)
        files.extend({**item, "path": f"{folder}/{item['path']}"} for item in manifest["files"])
    first, last = specs[0].the_day, specs[-1].the_day
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    baseline = {
        "seed": spec.seed,
        "demo_day": spec.the_day.isoformat(),
        "days": [day_spec.the_day.isoformat() for day_spec in specs],
        "scale": specs[0].scale,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "events": sum(item["lines"] for item in files),
        "files": files,
        "stories": [],
    }
    (out_dir / BASELINE_MANIFEST).write_text(
        json.dumps(baseline, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return baseline
