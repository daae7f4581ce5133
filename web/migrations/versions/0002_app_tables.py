"""The app's own tables beside Chainlit's.

- `app_secrets`: the login-cookie secret, one for every process that uses this store.
- `api_conversations`: which saved chat an API conversation continues (by the fingerprint
  of its messages), for every process.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "app_secrets",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "api_conversations",
        sa.Column("userIdentifier", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, primary_key=True),
        sa.Column("threadId", sa.Text, sa.ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    )


def downgrade() -> None:
    for table in ("api_conversations", "app_secrets"):
        op.drop_table(table)
