"""The reports as sheets an officer reads: headers, results and reasons in words, local times.

The report functions return machine rows (codes, epoch milliseconds); this
turns them into what a page and a file show, in the reader's language and in
Vietnam's time zone. A reason a newer agent sends and this controller does not
know yet is shown as "khác" with its code, so that nothing is hidden.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

from broadcast.levels import level_of
from controller import i18n
from controller.fleet.play_log import PlayLogRow
from controller.fleet.reports import PlayRow, QueueRow
from controller.web.names import group_name
from controller.web.spreadsheets import Sheet

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

i18n.register(
    {
        "log.title": ("Nhật ký phát từng bản tin", "Play log per bulletin"),
        "log.col.planned": ("Giờ dự kiến", "Planned start"),
        "log.col.actual": ("Giờ phát thực tế", "Actual start"),
        "log.col.bulletin": ("Bản tin", "Bulletin"),
        "log.col.device": ("Cụm loa", "Cluster"),
        "log.col.commune": ("Xã", "Commune"),
        "log.province": ("Cấp tỉnh", "Province"),
        "log.col.groups": ("Nhóm", "Groups"),
        "log.col.level": ("Mức độ", "Level"),
        "log.col.played": ("Thời lượng đã phát (phút:giây)", "Aired (min:s)"),
        "log.col.result": ("Kết quả", "Result"),
        "log.col.reason": ("Lý do", "Reason"),
        "log.col.relayed": ("Đã tiếp sóng (phút:giây)", "Relayed (min:s)"),
        "log.col.gaps": ("Số lần gián đoạn", "Gaps"),
        "log.col.gap_time": ("Thời gian gián đoạn (phút:giây)", "Gap time (min:s)"),
        "log.result.completed": ("Phát trọn vẹn", "Played in full"),
        "log.result.cut": ("Bị ngắt giữa chừng", "Cut short"),
        "log.result.missed": ("Không phát", "Not played"),
        "log.result.failed": ("Lỗi khi phát", "Failed"),
        "log.unnamed": ("(không tên)", "(untitled)"),
        "level.background": ("Nền", "Background"),
        "level.normal": ("Thông thường", "Normal"),  # as the broadcast pages say
        "level.priority": ("Ưu tiên", "Priority"),
        "level.emergency": ("Khẩn cấp", "Emergency"),
        "reason.other": ("khác ({code})", "other ({code})"),
        "reason.late": ("đến giờ mà thiết bị chưa sẵn sàng, quá trễ để phát", "too late to play"),
        "reason.quiet_hours": ("trong giờ yên tĩnh", "in quiet hours"),
        "reason.device_down": ("thiết bị tắt hoặc mất điện lúc đến giờ", "the device was off"),
        "reason.offline": ("thiết bị mất kết nối", "the device was offline"),
        "reason.clip_unavailable": ("không tải được tệp âm thanh", "the clip could not be fetched"),
        "reason.clip_unreadable": ("tệp âm thanh bị hỏng", "the clip is damaged"),
        "reason.audio_device": ("lỗi thiết bị âm thanh", "the sound device failed"),
        "reason.shutdown": ("phần mềm thiết bị đang tắt", "the agent was shutting down"),
        "reason.player_error": ("lỗi phần mềm phát", "a player error"),
        "reason.expired": ("lời gọi số đã quá cũ", "the call was too old"),
        "reason.superseded": ("đã có lời gọi mới hơn", "superseded by a newer call"),
        "reason.clock": ("đồng hồ thiết bị lệch", "the device's clock is wrong"),
        "reason.power_loss": ("mất điện", "power cut"),
        "reason.crash": ("phần mềm thiết bị khởi động lại", "the agent restarted"),
        "reason.agent_down": ("phần mềm thiết bị ngừng chạy", "the agent stopped"),
        "reason.preempted": ("nhường cho bản tin ưu tiên hơn", "preempted by a higher level"),
        "reason.stopped": ("bị dừng theo lệnh", "stopped by an operator"),
        "reason.failed": ("lỗi khi phát", "playback failed"),
        "reason.no_show": ("người dân vắng mặt", "no-show"),
        "reason.stream_unreachable": (
            "không kết nối được luồng tiếp sóng của đài",
            "the station's stream could not be reached",
        ),
    }
)

# the report pages' and files' words (the routes use them too)
i18n.register(
    {
        "reports.title": ("Báo cáo", "Reports"),
        "reports.plays": ("Báo cáo phát thanh", "Proof of play"),
        "reports.queue": ("Thống kê lấy số", "Queue statistics"),
        "reports.bad_period": (
            "Khoảng thời gian không hợp lệ: ngày kết thúc phải sau ngày bắt đầu, tối đa 366 ngày.",
            "Invalid period: the end must be after the start, 366 days at most.",
        ),
        "reports.from": ("Từ ngày", "From"),
        "reports.to": ("Đến hết ngày", "To (inclusive)"),
        "reports.by": ("Theo", "By"),
        "reports.show": ("Xem", "Show"),
        "reports.csv": ("Tải CSV", "Download CSV"),
        "reports.csv_semicolon": (
            "CSV cho Excel tiếng Việt (;)",
            "CSV for Excel in Vietnamese (;)",
        ),
        "reports.xlsx": ("Tải Excel (XLSX)", "Download Excel (XLSX)"),
        "reports.log": ("Nhật ký phát từng bản tin", "Play log per bulletin"),
        "reports.device": ("Cụm loa (mã, để trống: tất cả)", "Cluster (id, blank for all)"),
        "reports.day_hint": ("ngày/tháng/năm", "dd/mm/yyyy"),
        "reports.commune": ("Xã", "Commune"),
        "reports.choose_commune": (
            "Chọn một xã hoặc nhập mã cụm loa rồi bấm Xem. Nhật ký của cả tỉnh: tải Excel "
            "hoặc CSV.",
            "Choose a commune or type a cluster's id, then Show. The whole province's log: "
            "download the Excel or CSV file.",
        ),
        "reports.all_communes": ("Cả tỉnh", "The whole province"),
        "reports.other_commune": (
            "Bạn chỉ xem được báo cáo của xã mình: bỏ chọn xã khác.",
            "You can see only your own commune's reports: do not choose another commune.",
        ),
        "reports.bad_day": (
            "Ngày không hợp lệ: {value}. Hãy nhập theo dạng ngày/tháng/năm, ví dụ 03/12/2026.",
            "Invalid date: {value}. Type it as dd/mm/yyyy, for example 03/12/2026.",
        ),
        "reports.col.completed": ("Phát trọn vẹn", "Played in full"),
        "reports.col.missed_why": ("Lý do bỏ lỡ", "Why missed"),
        "reports.col.interrupted_why": ("Lý do bị ngắt", "Why cut"),
        "reports.col.interrupted_aired": (
            "Đã phát trước khi ngắt (phút:giây)",
            "Aired before the cut (min:s)",
        ),
        "reports.col.called": ("Đã gọi", "Called"),
        "reports.col.wait_avg": ("Chờ trung bình (phút:giây)", "Average wait (min:s)"),
        "reports.col.wait_max": ("Chờ lâu nhất (phút:giây)", "Longest wait (min:s)"),
        "reports.col.service_avg": ("Phục vụ trung bình (phút:giây)", "Average service (min:s)"),
        "reports.col.ratings": ("Số lượt đánh giá", "Ratings"),
        "reports.col.rating_avg": ("Điểm đánh giá trung bình", "Average rating"),
        "reports.none": ("Không có số liệu trong khoảng này.", "No figures in this period."),
        "reports.by.device": ("Thiết bị", "Device"),
        "reports.by.group": ("Nhóm", "Group"),
        "reports.by.commune": ("Xã", "Commune"),
        "reports.by.service": ("Dịch vụ", "Service"),
        "reports.by.counter": ("Quầy", "Counter"),
        "reports.by.officer": ("Cán bộ", "Officer"),
        "reports.by.booking": ("Đặt lịch / đến trực tiếp", "Booked / walk-in"),
        "reports.kind.booked": ("Đặt lịch trước", "Booked ahead"),
        "reports.kind.walk_in": ("Đến trực tiếp", "Walk-in"),
        "reports.col.plays": ("Số lượt phát", "Plays"),
        "reports.col.missed": ("Bỏ lỡ", "Missed"),
        "reports.col.failed": ("Lỗi", "Failed"),
        "reports.col.interrupted": ("Bị ngắt giữa chừng", "Interrupted"),
        "reports.col.issued": ("Số phát ra", "Tickets issued"),
        "reports.col.served": ("Đã phục vụ", "Served"),
        "reports.col.no_shows": ("Vắng mặt", "No-shows"),
        "reports.col.relay_gaps": ("Gián đoạn tiếp sóng", "Relay gaps"),
        "reports.col.relay_gap_time": ("Thời gian gián đoạn (phút:giây)", "Gap time (min:s)"),
    }
)


def local(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, LOCAL_TZ)


def reason_text(lang: i18n.Lang, code: str) -> str:
    if not code:
        return ""
    key = f"reason.{code}"
    return i18n.t(lang, key) if i18n.has(key) else i18n.t(lang, "reason.other", code=code)


def reasons_text(lang: i18n.Lang, counts: dict[str, int]) -> str:
    return ", ".join(f"{reason_text(lang, code)}: {n}" for code, n in counts.items())


def level_text(lang: i18n.Lang, priority: int | None) -> str:
    if priority is None:
        return ""
    name = level_of(priority).name.lower()
    return i18n.t(lang, f"level.{name}") if i18n.has(f"level.{name}") else str(priority)


def commune_text(lang: i18n.Lang, commune: str | None, communes: Mapping[str, str]) -> str:
    """A commune by its name ("Xã Phú An"); the province's own clusters as the province."""
    if commune is None:
        return i18n.t(lang, "log.province")
    return communes.get(commune, commune)


def play_log_sheet(
    lang: i18n.Lang,
    rows: Sequence[PlayLogRow],
    communes: Mapping[str, str] | None = None,
    *,
    column: bool = False,
) -> Sheet:
    """``communes``: the site's, by id, so that a commune's group reads as its name;
    ``column`` (the province's report on a site of communes): a "Xã" column after the
    cluster."""

    def t(key: str) -> str:
        return i18n.t(lang, key)

    names = communes or {}
    columns = ["planned", "actual", "bulletin", "device", "groups", "level", "played",
               "result", "reason", "relayed", "gaps", "gap_time"]  # fmt: skip
    if column:
        columns.insert(4, "commune")
    sheet = Sheet(t("log.title"), [t(f"log.col.{c}") for c in columns])
    for r in rows:
        where = [commune_text(lang, r.commune, names)] if column else []
        sheet.rows.append(
            [
                local(r.planned_ms),
                local(r.actual_ms),
                r.label or t("log.unnamed"),
                r.device_id,
                *where,
                ", ".join(group_name(lang, g, communes) for g in r.groups),
                level_text(lang, r.priority),
                dt.timedelta(milliseconds=r.played_ms),
                t(f"log.result.{r.result}"),
                reason_text(lang, r.reason),
                None if r.relayed_ms is None else dt.timedelta(milliseconds=r.relayed_ms),
                None if r.relayed_ms is None else r.gaps,
                None if r.relayed_ms is None else dt.timedelta(milliseconds=r.gap_ms),
            ]
        )
    return sheet


def plays_sheet(
    lang: i18n.Lang,
    by: str,
    rows: Sequence[PlayRow],
    communes: Mapping[str, str] | None = None,
    *,
    column: bool = False,
) -> Sheet:
    """``communes`` names a commune's group; with ``column`` (the province's report on a
    site of communes) a device's or group's row says its commune. By commune, each row
    is one, by name."""

    def t(key: str) -> str:
        return i18n.t(lang, key)

    names = communes or {}
    where = [t("log.col.commune")] if column and by != "commune" else []
    sheet = Sheet(
        t("reports.plays"),
        [t(f"reports.by.{by}"), *where, t("reports.col.plays"), t("reports.col.completed"),
         t("log.col.played"), t("reports.col.missed"), t("reports.col.missed_why"),
         t("reports.col.failed"), t("reports.col.interrupted"), t("reports.col.interrupted_why"),
         t("reports.col.interrupted_aired"), t("reports.col.relay_gaps"),
         t("reports.col.relay_gap_time")],
    )  # fmt: skip
    for r in rows:
        if by == "commune":
            first = [commune_text(lang, r.key or None, names)]
        else:
            key = group_name(lang, r.key, communes) if by == "group" else r.key
            first = [key, commune_text(lang, r.commune, names)] if column else [key]
        sheet.rows.append(
            [
                *first,
                r.plays,
                r.completed,
                dt.timedelta(milliseconds=r.total_played_ms),
                r.missed,
                reasons_text(lang, r.missed_by_reason),
                r.failed,
                r.interrupted,
                reasons_text(lang, r.interrupted_by_reason),
                dt.timedelta(milliseconds=r.interrupted_played_ms),
                r.relay_gaps,
                dt.timedelta(milliseconds=r.relay_gap_ms),
            ]
        )
    return sheet


def queue_sheet(lang: i18n.Lang, by: str, rows: Sequence[QueueRow]) -> Sheet:
    def t(key: str) -> str:
        return i18n.t(lang, key)

    def seconds(value: float | None) -> dt.timedelta | None:
        return None if value is None else dt.timedelta(seconds=value)

    sheet = Sheet(
        t("reports.queue"),
        [t(f"reports.by.{by}"), t("reports.col.issued"), t("reports.col.called"),
         t("reports.col.served"), t("reports.col.no_shows"), t("reports.col.wait_avg"),
         t("reports.col.wait_max"), t("reports.col.service_avg"), t("reports.col.ratings"),
         t("reports.col.rating_avg")],
    )  # fmt: skip
    for r in rows:
        sheet.rows.append(
            [
                t(f"reports.kind.{r.key}") if by == "booking" else r.key,
                r.issued,
                r.called,
                r.served,
                r.no_shows,
                seconds(r.avg_wait_s),
                seconds(r.max_wait_s),
                seconds(r.avg_service_s),
                r.ratings,
                r.avg_rating,
            ]
        )
    return sheet
