"""English and Simplified Chinese. The page's language follows the browser's Accept-Language, unless the
person chose one with the switch (a cookie). Messages are looked up by their English text, so a message
missing from a catalog still reads in English rather than as a key."""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = {"en": "English", "zh": "简体中文"}
COOKIE = "dth_lang"

ZH: dict[str, str] = {
    "Transfer tasks": "传输任务",
    "Data Transfer Hub": "数据传输中心",
    "Create task": "创建任务",
    "New S3 task": "新建 S3 任务",
    "New Image task": "新建镜像任务",
    "Namespace": "命名空间",
    "Name": "名称",
    "Phase": "状态",
    "Type": "类型",
    "Source → destination": "源 → 目标",
    "Progress": "进度",
    "Rate": "速率",
    "ETA": "预计剩余",
    "Last run": "上次运行",
    "Description": "描述",
    "All": "全部",
    "Filter": "筛选",
    "No transfer tasks to show.": "没有可显示的传输任务。",
    "objects": "个对象",
    "Sign out": "退出登录",
    "Sign in": "登录",
    "Signed in as": "当前用户",
    "Local mode": "本地模式",
    "Preview": "预览",
    "Create": "创建",
    "Save": "保存",
    "Back": "返回",
    "Cancel": "取消",
    "Source": "源",
    "Destination": "目标",
    "Options": "选项",
    "Credentials": "凭证",
    "Task": "任务",
    "Access key ID": "访问密钥 ID",
    "Secret access key": "秘密访问密钥",
    "Typed-in keys become a Secret in the task's namespace; they are never shown again.": "输入的密钥会保存为任务所在命名空间中的 Secret，之后不再显示。",
    "The YAML to be applied": "将要应用的 YAML",
    "The server accepted it in a dry run. Copy it into GitOps, or create it now.": "服务器的试运行已通过。可复制到 GitOps，或立即创建。",
    "Please correct the fields marked below.": "请更正下面标出的字段。",
    "Spec": "规格",
    "Conditions": "条件",
    "Events": "事件",
    "Counters": "计数",
    "Stack": "堆栈",
    "Failures": "失败的对象",
    "Chart": "图表",
    "Objects and bytes since this page opened": "本页打开以来的对象数和字节数",
    "Suspend": "暂停",
    "Resume": "恢复",
    "Edit": "编辑",
    "Clone": "克隆",
    "Delete": "删除",
    "Run now": "立即运行",
    "Delete the task and its stack": "删除任务及其堆栈",
    "Delete the task, keep the stack": "删除任务，保留堆栈",
    "found": "已发现",
    "copied": "已复制",
    "skipped": "已跳过",
    "deleted": "已删除",
    "failed": "失败",
    "bytes found": "发现字节",
    "bytes copied": "复制字节",
    "bytes skipped": "跳过字节",
    "Not allowed": "不允许",
    "Not found": "未找到",
    "Something went wrong": "出错了",
    "Language": "语言",
    "Reason": "原因",
    "Message": "消息",
    "Time": "时间",
    "Key": "键",
    "Status": "状态",
    "none": "无",
    "Edit task": "编辑任务",
    "Clone task": "克隆任务",
}
CATALOGS: dict[str, dict[str, str]] = {"en": {}, "zh": ZH}


def negotiate(accept_language: str, chosen: str | None = None) -> str:
    """The language to answer in: the person's choice, else the first of the browser's we have."""
    if chosen in LANGUAGES:
        return str(chosen)
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, index, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        base = tag.split("-")[0]
        if tag in ("zh-tw", "zh-hk", "zh-hant") or tag.startswith("zh-hant"):
            continue  # traditional Chinese readers are better served by English than by simplified
        if base in LANGUAGES:
            return base
    return "en"


def translator(language: str) -> Callable[[str], str]:
    catalog = CATALOGS.get(language, {})

    def translate(text: str) -> str:
        return catalog.get(text, text)

    return translate
