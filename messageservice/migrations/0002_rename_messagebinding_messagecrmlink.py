# "binding" meant three things; these rows are the CRM items a message belongs to.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("messageservice", "0001_initial"),
    ]

    operations = [
        migrations.RenameModel(old_name="MessageBinding", new_name="MessageCrmLink"),
        migrations.AlterField(
            model_name="messagecrmlink",
            name="message",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="crm_links",
                                    to="messageservice.message"),
        ),
    ]
