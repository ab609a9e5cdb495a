"""What the controller says to people, in Vietnamese and English.

Every key holds both languages, so a string cannot be added in one only.
Another area keeps its strings beside its code and registers them at import:

    from controller import i18n
    i18n.register({"fleet.title": ("Thiết bị", "Devices")})

then a template says `{{ t("fleet.title") }}` and an error says
`Refusal(404, "fleet.no_device", id=device_id)`. Vietnamese is the default;
`?lang=en` switches and a cookie remembers it.
"""

from __future__ import annotations

from typing import Literal

Lang = Literal["vi", "en"]
LANGS: tuple[Lang, ...] = ("vi", "en")
DEFAULT: Lang = "vi"

_CATALOGUE: dict[str, tuple[str, str]] = {}


def register(entries: dict[str, tuple[str, str]]) -> None:
    """Add strings; a key already registered with other text is a programming error."""
    for key, pair in entries.items():
        old = _CATALOGUE.get(key)
        if old is not None and old != pair:
            raise ValueError(f"i18n key {key!r} is already registered with other text")
        if len(pair) != 2 or not all(pair):
            raise ValueError(f"i18n key {key!r} needs a Vietnamese and an English text")
        _CATALOGUE[key] = pair


def language(value: str | None) -> Lang:
    return "en" if value == "en" else "vi"


def t(lang: Lang, key: str, **params: object) -> str:
    """The text of `key` in `lang`, with `{name}` placeholders filled; the key if unknown."""
    pair = _CATALOGUE.get(key)
    if pair is None:
        return key
    text = pair[LANGS.index(lang)]
    return text.format(**params) if params else text


def both(key: str, **params: object) -> str:
    """Vietnamese, then English: for messages read by programs and people alike."""
    return f"{t('vi', key, **params)} / {t('en', key, **params)}"


def has(key: str) -> bool:
    return key in _CATALOGUE


def keys() -> list[str]:
    return sorted(_CATALOGUE)


class Refusal(Exception):
    """A request the controller turns down, with an HTTP status and a bilingual reason.

    Raised anywhere (stores, routes); the web app answers it as JSON or as a
    page, in both languages.
    """

    def __init__(
        self, status: int, key: str, headers: dict[str, str] | None = None, **params: object
    ) -> None:
        super().__init__(both(key, **params))
        self.status = status
        self.key = key
        self.params = params
        self.headers = headers or {}

    def text(self, lang: Lang) -> str:
        return t(lang, self.key, **self.params)


register(
    {
        "app.name": ("Xã số", "Xaso"),
        "lang.switch": ("English", "Tiếng Việt"),
        "nav.home": ("Trang chủ", "Home"),
        "nav.users": ("Người dùng", "Users"),
        "nav.tokens": ("Mã truy cập API", "API tokens"),
        "nav.audit": ("Nhật ký thao tác", "Audit log"),
        "nav.logout": ("Đăng xuất", "Sign out"),
        "confirm.stop": (
            "Dừng phát trên các nơi đã chọn? Bản tin đang phát sẽ bị ngắt.",
            "Stop playing at the chosen places? What is on air will be cut.",
        ),
        "confirm.delete_clip": (
            "Xoá tệp âm thanh «{title}»? Không thể hoàn tác.",
            "Delete the clip «{title}»? This cannot be undone.",
        ),
        "confirm.delete_entry": (
            "Xoá lịch phát «{label}»? Các cụm loa sẽ không phát mục này nữa.",
            "Delete the entry «{label}»? The speakers will no longer play it.",
        ),
        "confirm.revoke_token": (
            "Thu hồi mã truy cập «{name}»? Chương trình dùng mã này sẽ không truy cập được nữa.",
            "Revoke the token «{name}»? Programs using it will lose access.",
        ),
        "home.title": ("Bảng điều khiển", "Control panel"),
        # Roles and fields
        "role.admin": ("Quản trị", "Administrator"),
        "role.broadcaster": ("Phát thanh viên", "Broadcaster"),
        "role.technician": ("Kỹ thuật viên", "Technician"),
        "role.officer": ("Cán bộ", "Officer"),
        "role.leader": ("Lãnh đạo", "Leader"),
        "field.username": ("Tên đăng nhập", "Username"),
        "field.display_name": ("Họ và tên", "Full name"),
        "field.password": ("Mật khẩu", "Password"),
        "field.role": ("Vai trò", "Role"),
        "field.active": ("Đang hoạt động", "Active"),
        "field.created": ("Ngày tạo", "Created"),
        "field.name": ("Tên", "Name"),
        "field.owner": ("Người tạo", "Owner"),
        "field.last_used": ("Dùng lần cuối", "Last used"),
        "field.state": ("Trạng thái", "State"),
        "field.when": ("Thời điểm", "When"),
        "field.who": ("Người thực hiện", "Who"),
        "field.action": ("Thao tác", "Action"),
        "field.target": ("Đối tượng", "Target"),
        "field.details": ("Chi tiết", "Details"),
        "field.ip": ("Địa chỉ IP", "IP address"),
        "yes": ("Có", "Yes"),
        "no": ("Không", "No"),
        "never": ("Chưa", "Never"),
        # Sign-in
        "login.title": ("Đăng nhập", "Sign in"),
        "login.submit": ("Đăng nhập", "Sign in"),
        "login.failed": (
            "Sai tên đăng nhập hoặc mật khẩu.",
            "Wrong username or password.",
        ),
        "login.locked": (
            "Đăng nhập sai quá nhiều lần. Vui lòng thử lại sau {minutes} phút.",
            "Too many failed sign-ins. Please try again in {minutes} minutes.",
        ),
        "login.expired_form": (
            "Biểu mẫu đã hết hạn. Vui lòng tải lại trang và thử lại.",
            "The form has expired. Please reload the page and try again.",
        ),
        # Users page
        "users.title": ("Người dùng", "Users"),
        "users.create": ("Thêm người dùng", "Add a user"),
        "users.save_role": ("Đổi vai trò", "Change role"),
        "users.deactivate": ("Khóa tài khoản", "Deactivate"),
        "users.activate": ("Mở khóa", "Activate"),
        "users.created": ("Đã thêm người dùng {username}.", "User {username} added."),
        "users.updated": ("Đã cập nhật {username}.", "{username} updated."),
        # Tokens page
        "tokens.title": ("Mã truy cập API", "API tokens"),
        "tokens.intro": (
            "Mã truy cập cho các hệ thống khác, ví dụ hệ thống thông tin nguồn của tỉnh. "
            "Gửi trong tiêu đề Authorization: Bearer <mã>.",
            "Tokens for other systems, such as the province's source-information system. "
            "Send one in the header Authorization: Bearer <token>.",
        ),
        "tokens.create": ("Tạo mã truy cập", "Create a token"),
        "tokens.shown_once": (
            "Mã truy cập mới (chỉ hiển thị một lần, hãy sao chép ngay):",
            "The new token (shown only once, copy it now):",
        ),
        "tokens.revoke": ("Thu hồi", "Revoke"),
        "tokens.revoked": ("Đã thu hồi", "Revoked"),
        "tokens.active": ("Đang dùng", "Active"),
        # Audit page
        "audit.title": ("Nhật ký thao tác", "Audit log"),
        "audit.filter": ("Lọc", "Filter"),
        "audit.empty": ("Chưa có thao tác nào.", "Nothing recorded yet."),
        "audit.older": ("Cũ hơn", "Older"),
        # Errors
        "error.title": ("Không thực hiện được", "Could not do that"),
        "error.back": ("Quay lại trang chủ", "Back to the home page"),
        "error.not_signed_in": (
            "Bạn cần đăng nhập.",
            "You need to sign in.",
        ),
        "error.bad_token": (
            "Mã truy cập không hợp lệ, đã bị thu hồi hoặc chủ sở hữu đã bị khóa.",
            "The API token is not valid, has been revoked, or its owner is deactivated.",
        ),
        "error.forbidden": (
            "Vai trò của bạn không được phép thực hiện việc này.",
            "Your role is not allowed to do this.",
        ),
        "error.csrf": (
            "Yêu cầu thiếu mã chống giả mạo (CSRF). Vui lòng tải lại trang và thử lại.",
            "The request lacks its anti-forgery (CSRF) token. Please reload the page and retry.",
        ),
        "error.not_found": ("Không tìm thấy trang hoặc mục này.", "No such page or item."),
        "error.method": (
            "Phương thức HTTP này không được hỗ trợ ở đây.",
            "This HTTP method is not supported here.",
        ),
        "error.invalid": ("Dữ liệu không hợp lệ: {problems}", "Invalid input: {problems}"),
        "error.too_large": ("Yêu cầu quá lớn.", "The request is too large."),
        "error.server": (
            "Lỗi máy chủ. Sự cố đã được ghi lại; vui lòng thử lại sau.",
            "Server error. It has been logged; please try again later.",
        ),
        "error.database": (
            "Không kết nối được cơ sở dữ liệu.",
            "The database cannot be reached.",
        ),
        "error.http": ("Yêu cầu không thực hiện được (mã {code}).", "Request failed ({code})."),
        "error.no_user": ("Không có người dùng {username}.", "No user {username}."),
        "error.no_token": ("Không có mã truy cập số {id}.", "No API token {id}."),
        "error.username_taken": (
            "Tên đăng nhập {username} đã được dùng.",
            "The username {username} is taken.",
        ),
        "error.bad_username": (
            "Tên đăng nhập gồm 2-32 ký tự a-z, 0-9, '.', '_' hoặc '-', bắt đầu bằng chữ hoặc số.",
            "A username is 2-32 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit.",
        ),
        "error.bad_display_name": (
            "Họ và tên cần 1-100 ký tự.",
            "The full name needs 1-100 characters.",
        ),
        "error.bad_role": (
            "Vai trò phải là admin, broadcaster, technician hoặc officer.",
            "The role must be admin, broadcaster, technician or officer.",
        ),
        "error.bad_token_name": (
            "Tên mã truy cập cần 1-100 ký tự.",
            "The token name needs 1-100 characters.",
        ),
        "error.bad_commune": (
            "Không có xã {commune}: chọn một xã trong danh sách.",
            "No commune {commune}: choose one from the list.",
        ),
        "error.other_commune": (
            "Bạn chỉ quản lý người dùng của xã mình: chọn xã của bạn.",
            "You manage only your own commune's users: choose your commune.",
        ),
        "field.commune": ("Xã", "Commune"),
        "commune.province": ("Cấp tỉnh (mọi xã)", "The province (every commune)"),
        "users.save_commune": ("Đổi xã", "Change commune"),
        "error.last_admin": (
            "Không thể khóa, hạ quyền hoặc chuyển về một xã quản trị viên cấp tỉnh cuối cùng: "
            "hãy tạo hoặc chỉ định một quản trị viên cấp tỉnh khác trước.",
            "The last active province administrator cannot be deactivated, given another role "
            "or moved into a commune: make another user a province administrator first.",
        ),
        "error.self_lockout": (
            "Bạn không thể tự khóa hoặc tự hạ quyền của mình.",
            "You cannot deactivate yourself or change your own role.",
        ),
        "password.too_short": (
            "Mật khẩu cần ít nhất 10 ký tự.",
            "The password needs at least 10 characters.",
        ),
        "password.too_long": (
            "Mật khẩu dài tối đa 256 ký tự.",
            "The password may have at most 256 characters.",
        ),
    }
)
